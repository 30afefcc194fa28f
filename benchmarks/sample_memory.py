"""Peak memory of drawing one token per row from a large vocabulary: the inverse-CDF draw on
(rows, V) logits at once, against row chunks of at most `SAMPLE_CHUNK` logits
(veriscale.policy.engine.sample_next). Each setting runs in its own process, which allocates the
logits, then draws `--draws` times; the figure is the growth of the process's peak resident set
over the logits already held (the float32 and float64 copies the draw makes). The tokens of both
settings are compared: chunking must change none.

    python benchmarks/sample_memory.py --rows 256 --vocab 262144 --threads 2 [--chunks 16777216]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(rows: int, vocab: int, chunk: int, draws: int, threads: int) -> None:
    import torch

    from veriscale.policy.engine import sample_next

    torch.set_num_threads(threads)
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(0))  # (rows, V) float32
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    tokens = [sample_next(logits, 0.7, 0, torch.Generator().manual_seed(d), draw="inverse_cdf", chunk=chunk)
              for d in range(draws)]
    seconds = (time.perf_counter() - start) / draws
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": (peak - before) / 1024, "seconds": seconds,
                      "tokens": torch.stack(tokens).tolist()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=262_144, help="Gemma 3's vocabulary; SmolLM2's is 49,152")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunks", default="", help="more chunk sizes in logits, comma-separated (e.g. 16777216, "
                                                 "the default before 2**20)")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.rows, args.vocab, args.child, args.draws, args.threads)
        return
    from veriscale.bench import cpu_flags, cpu_model
    from veriscale.policy.engine import SAMPLE_CHUNK

    settings = {"all rows at once": 2**62, f"row chunks of {SAMPLE_CHUNK:,} logits (the default)": SAMPLE_CHUNK,
                **{f"row chunks of {int(c):,} logits": int(c) for c in args.chunks.split(",") if c.strip()}}
    out = {}
    for name, chunk in settings.items():
        run = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--vocab", str(args.vocab),
                              "--draws", str(args.draws), "--threads", str(args.threads), "--child", str(chunk)],
                             capture_output=True, text=True, check=True)
        out[name] = json.loads(run.stdout.strip().splitlines()[-1])
    logits_mib = args.rows * args.vocab * 4 / 2**20
    print(f"{cpu_model()} ({cpu_flags()}), {args.threads} thread(s); {args.rows} rows x {args.vocab:,} logits "
          f"(float32, {logits_mib:,.0f} MiB held before the draw), temperature 0.7, mean of {args.draws} draws\n")
    print("| draw | peak memory above the logits | vs all at once | seconds a draw | vs all at once |")
    print("|---|---|---|---|---|")
    ref = out["all rows at once"]
    for name, r in out.items():
        print(f"| {name} | {r['peak_mib']:,.0f} MiB | {r['peak_mib'] / ref['peak_mib']:.2f}x | {r['seconds']:.3f} | "
              f"{r['seconds'] / ref['seconds']:.2f}x |")
    same = all(r["tokens"] == ref["tokens"] for r in out.values())
    print(f"\nthe same tokens in every setting: {same}")


if __name__ == "__main__":
    main()
