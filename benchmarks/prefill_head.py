"""The output head on a prefill's last column: a strided view (what `logits_to_keep=1` hands
the head: hidden[:, -1:, :] of a (rows, P, d) batch) against a contiguous copy (what keeping the
column by index, `logits_to_keep=tensor([P-1])`, hands it; policy/hf_sampler.py `_prefill`).

Each setting runs in its own process, which builds the (rows, P, d) hidden states and the
(V, d) head weight, then applies the head once; the figures are its seconds and the growth of
the process's peak resident set over what it already held. The logits of both settings are
compared: the largest absolute difference over the first 64 logits of every row.

    python benchmarks/prefill_head.py --rows 64,200,256 --columns 56 --dtypes bfloat16,float32 --threads 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def child(rows: int, columns: int, dtype: str, layout: str, threads: int, d: int, vocab: int) -> None:
    import resource
    import time

    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    dt = getattr(torch, dtype)
    hidden = torch.randn(rows, columns, d, generator=g).to(dt)  # (rows, P, d)
    weight = torch.randn(vocab, d, generator=g).to(dt)  # (V, d), SmolLM2's tied head by default
    last = hidden[:, -1:, :] if layout == "strided" else hidden[:, [columns - 1], :]  # (rows, 1, d)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with torch.inference_mode():
        start = time.perf_counter()
        logits = torch.nn.functional.linear(last, weight)  # (rows, 1, V)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mib": (peak - before) / 1024,
                      "logits": logits.float()[:, 0, :64].tolist()}))


def diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def run(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="64,200,256", help="comma-separated prompts prefilled together")
    ap.add_argument("--columns", type=int, default=56, help="prompt columns P (task 1's chat prompts: 53-56)")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--d", type=int, default=576, help="hidden size (SmolLM2-135M)")
    ap.add_argument("--vocab", type=int, default=49152, help="vocabulary (SmolLM2-135M)")
    ap.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        r, c, dt, lay, th, d, v = a.child
        child(int(r), int(c), dt, lay, int(th), int(d), int(v))
        return
    print(f"head ({a.vocab} x {a.d}) on the last of {a.columns} columns, {a.threads} thread(s)\n")
    print("| dtype | rows | strided view: s | peak MiB | contiguous copy: s | peak MiB | speed-up | max logit difference |")
    print("|---|---|---|---|---|---|---|---|")
    for dt in a.dtypes.split(","):
        for rows in map(int, a.rows.split(",")):
            s, c = (run(rows, a.columns, dt, lay, a.threads, a.d, a.vocab) for lay in ("strided", "contiguous"))
            print(f"| {dt} | {rows} | {s['seconds']:.3f} | {s['peak_mib']:.0f} | {c['seconds']:.3f} | "
                  f"{c['peak_mib']:.0f} | {s['seconds'] / c['seconds']:.0f}x | {diff(s['logits'], c['logits']):.1e} |",
                  flush=True)


if __name__ == "__main__":
    main()
