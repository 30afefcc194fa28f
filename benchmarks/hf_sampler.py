"""Sampling throughput of `HFSampler` against transformers' plain `generate`, on SmolLM2-135M-Instruct.

Both sample the same rows (N reasoning-gym prompts x M samples each, chat template, temperature
1, no top-k/top-p) up to the same number of new tokens, in one batch of all rows. Two rates:
- padded tokens/s: rows x longest row / seconds, what a padded batch holds (the SPEC's "counting
  padding" figure);
- useful tokens/s: tokens up to and including each row's EOS / seconds (what a learner uses).
`generate` keeps finished rows in the batch until the longest one ends and prefills every copy
of a prompt; HFSampler drops finished rows and prefills each distinct prompt once.

Run (needs the SmolLM2 extra): `nice -n 10 python benchmarks/hf_sampler.py --prompts 8 --samples 8
--new-tokens 96 --threads 1 [--task gsm_symbolic]`; prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os

import torch

from sampler_speed import plain_generate, sampled  # benchmarks/ is on the path of a script run from it

from veriscale.policy.load import load_policy
from veriscale.policy.smollm2 import ensure_converted
from veriscale.policy.text import HFConfig
from veriscale.tasks.gym import GymConfig, GymTask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="basic_arithmetic", choices=["basic_arithmetic", "gsm_symbolic"])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B = args.prompts * args.samples
    sampler = load_policy(f"hf:{ensure_converted()}", hf=HFConfig(batch_size=B, progress=False)).sampler  # HFSampler
    problems = GymTask(GymConfig(name=args.task)).prompts("test", args.prompts, args.seed)
    rows = [p for p in problems for _ in range(args.samples)]
    print(f"SmolLM2-135M-Instruct float32, {args.prompts} {args.task} prompts x {args.samples} samples = {B} rows, "
          f"{args.new_tokens} new tokens, temperature 1, {args.threads} thread(s), "
          f"load average before {os.getloadavg()[0]:.1f}\n")
    print("| sampler | seconds | padded tokens/s | useful tokens/s | useful tokens |")
    print("|---|---|---|---|---|")
    for name, fn in (("transformers generate", plain_generate), ("HFSampler", sampled)):
        s, padded, useful, _ = fn(sampler, rows, args.new_tokens, 1.0, args.seed)
        print(f"| {name} | {s:.1f} | {padded / s:.1f} | {useful / s:.1f} | {useful} |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
