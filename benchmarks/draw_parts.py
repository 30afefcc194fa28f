"""Where one draw of the transformers sampler spends its time: the prefills of the rows that
enter, the decode steps with the batch full, the decode steps below full (the tail, once no row
is left waiting, and the steps before a compaction refills), and the rest (the token draw over the
vocabulary, the per-row bookkeeping, row selection and joins).

SmolLM2-135M-Instruct, `--prompts` held-out basic_arithmetic prompts (two terms of up to two
digits, as studies/llm.toml) x `--samples` samples, temperature 0.7, up to `--new-tokens` tokens,
one draw per row count of `--batch-sizes`, in this order, in one process. The network's forward
calls are timed from the outside (a wrapper around the decoding network's `forward`); the rest is
the draw's wall time less those.

With `--roofline-rows`, each draw is followed by the matmul-only rate of one decode step's linear
layers in the draw's dtype at those row counts (benchmarks/decode_profile.py, best of 3 x 8 steps),
and the draw's useful tokens/s is given as a share of it: the measure of the sampler's roofline
target, each share paired with a roofline timed right after its draw (a row count listed twice in
`--batch-sizes` repeats the same draw, which shows the host's run-to-run spread). With `--attentions`,
each row count is drawn with each decode attention in turn (`hf.decode_attention`), so their draws
alternate and a slow spell of the host hits both.

    cd benchmarks && python draw_parts.py --threads 2 --prompts 256 --samples 4 --batch-sizes 64,256 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from decode_profile import roofline_rate
from veriscale.bench import cpu_flags, cpu_model
from veriscale.policy.hf_sampler import HFSampler
from veriscale.policy.load import load_policy
from veriscale.policy.text import HFConfig
from veriscale.tasks.gym import GymConfig, GymTask


def timed_draw(sampler: HFSampler, rows: list, new_tokens: int, seed: int) -> dict:
    """One draw of `rows`, its forward calls timed: {seconds, useful, prefill, full, below, steps_below}."""
    net = sampler.decoder()
    forward, calls = net.forward, []  # (rows fed, tokens per row, seconds) per call

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = forward(*args, **kwargs)
        calls.append((*kwargs["input_ids"].shape, time.perf_counter() - start))
        return out

    net.forward = timed
    try:
        start = time.perf_counter()
        r = sampler.sample(rows, new_tokens, temperature=0.7, seed=seed)
        seconds = time.perf_counter() - start
    finally:
        del net.forward  # the instance attribute goes; the class's forward is seen again
    full = min(sampler.cfg.batch_size, len(rows))  # rows of a full batch
    steps = [(b, s) for b, width, s in calls if width == 1]
    return {"seconds": seconds, "useful": int(r.counts.sum()),
            "prefill": sum(s for _, width, s in calls if width > 1),
            "full": sum(s for b, s in steps if b >= full),
            "below": sum(s for b, s in steps if b < full),
            "steps": len(steps), "steps_below": sum(b < full for b, _ in steps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--batch-sizes", default="64,256", help="row counts, comma-separated, one draw each")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"], help="hf.sample_dtype")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attentions", default="bmm", help="decode attentions, comma-separated, each row count drawn "
                                                       "with each in turn (hf.decode_attention)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--roofline-rows", default="",
                    help="row counts of the matmul-only rate timed after each draw, comma-separated (none by default)")
    args = ap.parse_args()
    roof_rows = [int(b) for b in args.roofline_rows.split(",") if b.strip()]
    torch.set_num_threads(args.threads)
    hf = load_policy("smollm2", hf=HFConfig(progress=False)).sampler
    task = GymTask(GymConfig(name="basic_arithmetic", max_digits=2))
    rows = [p for p in task.prompts("test", args.prompts, args.seed) for _ in range(args.samples)]
    print(f"SmolLM2-135M-Instruct, {cpu_model()} ({cpu_flags()}), {args.threads} thread(s), torch "
          f"{torch.__version__}; {args.prompts} prompts x {args.samples} samples = {len(rows)} rows, up to "
          f"{args.new_tokens} new tokens, {args.dtype} decoding, refill on\n")
    roof_head = "".join(f" matmul-only tokens/s at {b} rows | share of it |" for b in roof_rows)
    print("| rows decoded together | attention | seconds | useful tokens/s | prefill | decode steps, batch full | "
          f"decode steps below full | the rest (token draw, bookkeeping, joins) | steps (below full) |{roof_head}")
    print("|---|---|---|---|---|---|---|---|---|" + "---|---|" * len(roof_rows))
    for bs, att in ((int(b), a) for b in args.batch_sizes.split(",") if b.strip() for a in args.attentions.split(",")):
        s = HFSampler(hf.model, hf.tok, replace(hf.cfg, sample_dtype=args.dtype, batch_size=bs, decode_attention=att))
        d = timed_draw(s, rows, args.new_tokens, args.seed)
        share = lambda x: f"{x:.1f} s ({x / d['seconds']:.0%})"  # noqa: E731
        rest = d["seconds"] - d["prefill"] - d["full"] - d["below"]
        rate = d["useful"] / d["seconds"]
        roof = {b: roofline_rate(s.decoder(), b) for b in roof_rows}
        print(f"| {bs} | {att} | {d['seconds']:.1f} | {rate:.1f} | {share(d['prefill'])} | "
              f"{share(d['full'])} | {share(d['below'])} | {share(rest)} | {d['steps']} ({d['steps_below']}) |"
              + "".join(f" {r:,.0f} | {rate / r:.1%} |" for r in roof.values()), flush=True)


if __name__ == "__main__":
    main()
