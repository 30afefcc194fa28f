"""How the transformers sampler draws a token: `torch.multinomial` against the inverse-CDF draw
(veriscale/policy/engine.py `sample_next`), both in one process, alternating.

Two measurements:
- the draw alone: (B, V) logits of SmolLM2's vocabulary size, one thread, milliseconds per call
  (median of `--repeats` timings of 20 calls);
- a budget-forced draw of SmolLM2-135M-Instruct on basic_arithmetic test prompts (two terms of
  up to two digits, chat template, temperature 0.7, s1 forcing with "Wait" before H/4, bf16
  decoding, batches of 64), seconds and useful tokens per second for each draw method, the
  methods alternating over `--rounds` rounds with the same seeds.

Run: `python benchmarks/token_draw.py --threads 1 --prompts 64 --H 128 --rounds 2`; prints Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from veriscale.policy.engine import sample_next
from veriscale.policy.forcing import BudgetForcing, forced_sample
from veriscale.policy.load import load_policy
from veriscale.policy.text import HFConfig
from veriscale.tasks.gym import GymConfig, GymTask

DRAWS = ("multinomial", "inverse_cdf")


def draw_alone(B: int, V: int, repeats: int) -> dict[str, float]:
    """Median milliseconds per `sample_next` call on (B, V) logits, per draw method."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, V, generator=g) * 3
    times: dict[str, list[float]] = {d: [] for d in DRAWS}
    for _ in range(repeats):
        for d in DRAWS:
            sample_next(logits, 0.7, 0, g, d)
            t = time.perf_counter()
            for _ in range(20):
                sample_next(logits, 0.7, 0, g, d)
            times[d].append((time.perf_counter() - t) / 20 * 1000)
    return {d: statistics.median(v) for d, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--H", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sampler = load_policy("smollm2", hf=HFConfig(batch_size=64, progress=False, sample_dtype="bfloat16")).sampler
    V = sampler.model.config.vocab_size
    alone = draw_alone(64, V, args.repeats)
    print(f"draw alone, (64, {V}) logits, {args.threads} thread(s), median ms per call:\n")
    print("| draw | ms | vs multinomial |\n|---|---|---|")
    for d in DRAWS:
        print(f"| {d} | {alone[d]:.1f} | {alone['multinomial'] / alone[d]:.1f}x |")
    prompts = GymTask(GymConfig(name="basic_arithmetic", max_digits=2)).prompts("test", args.prompts, 0)
    cfg = BudgetForcing(cue=" Final answer:", answer_tokens=6, wait="\nWait,", min_tokens=args.H // 4)
    secs = {d: 0.0 for d in DRAWS}
    tokens = {d: 0 for d in DRAWS}
    for r in range(args.rounds):
        for d in DRAWS:
            sampler.cfg = replace(sampler.cfg, draw=d)
            t = time.perf_counter()
            out = forced_sample(sampler, prompts, args.H, cfg, temperature=0.7, seed=r)
            secs[d] += time.perf_counter() - t
            tokens[d] += int(out.counts.sum())
    print(f"\nforced draw, {args.prompts} prompts at H = {args.H}, {args.rounds} round(s):\n")
    print("| draw | seconds | useful tokens | useful tokens/s | vs multinomial |\n|---|---|---|---|---|")
    base = tokens["multinomial"] / secs["multinomial"]
    for d in DRAWS:
        rate = tokens[d] / secs[d]
        print(f"| {d} | {secs[d]:.1f} | {tokens[d]} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
