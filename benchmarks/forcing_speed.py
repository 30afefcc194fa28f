"""Budget-forced sampling of SmolLM2-135M-Instruct: one pass (the transformers sampler edits rows
inline) against rounds (one `generate_ids` call per round, the reference), same prompts, same
process, alternating (round r uses seed + r for both), so a busy CPU slows them alike.

The forcing is the LLM study's at budget H (studies/llm.toml): the cue " Final answer:" at
C = H - |cue| - 6, and "\\nWait," in place of an end-of-thinking before a quarter of H, at most
twice. Rounds pay for every round's longest row again and re-read prompt + trace so far; one pass
runs once to the longest row. Reported: seconds, useful tokens (what the rows hold) per second,
the ratio of rates, and the pass rate of each (different random draws: a check that both still
solve the task, not a paired comparison).

`--greedy N` also decodes N prompts at temperature 0 both ways and counts the rows that are
identical (they should all be: the same rules, the same model; only the batching differs).

Run: `python benchmarks/forcing_speed.py --threads 1 [--prompts 24 --H 256 --rounds 2 --greedy 16]`
(a study sweep runs each job on 1 thread); prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from veriscale.policy.forcing import BudgetForcing, forced_sample
from veriscale.policy.load import load_policy
from veriscale.policy.text import HFConfig
from veriscale.tasks.base import NEVER
from veriscale.tasks.gym import GymConfig, GymTask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--greedy", type=int, default=0, help="prompts to compare at temperature 0 (0 = none)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sampler = load_policy("smollm2", hf=HFConfig(progress=False)).sampler
    task = GymTask(GymConfig(max_digits=2))
    prompts = task.prompts("test", args.prompts, 0)
    cfg = BudgetForcing(cue=" Final answer:", answer_tokens=6, wait="\nWait,", min_tokens=round(0.25 * args.H))
    totals = {"rounds (reference)": [0.0, 0, 0], "one pass": [0.0, 0, 0]}  # seconds, tokens, successes
    for r in range(args.rounds):
        for name in totals:
            start = time.perf_counter()
            ro = forced_sample(sampler, prompts, args.H, cfg, temperature=args.temperature, seed=r,
                               rounds=name.startswith("rounds"))
            totals[name][0] += time.perf_counter() - start
            totals[name][1] += int(ro.counts.sum())
            totals[name][2] += int((task.check(prompts, ro) < NEVER).sum())
    print(f"SmolLM2-135M-Instruct, {args.threads} thread(s), {args.prompts} basic_arithmetic prompts (two terms, up "
          f"to two digits), H = {args.H}, temperature {args.temperature}, {args.rounds} round(s); load average "
          f"after {os.getloadavg()[0]:.1f}\n")
    if args.greedy:
        rows = lambda r: [r.tokens[i, :r.counts[i]].tolist() for i in range(len(r))]  # noqa: E731
        few = task.prompts("test", args.greedy, 0)
        one, ref = (forced_sample(sampler, few, args.H, cfg, temperature=0.0, rounds=k) for k in (False, True))
        same = sum(a == b for a, b in zip(rows(one), rows(ref)))
        print(f"temperature 0, {args.greedy} prompts: {same}/{args.greedy} rows identical in one pass and in rounds "
              f"(mean {float(one.counts.float().mean()):.1f} tokens a row)\n")
    base = totals["rounds (reference)"]
    if not args.rounds:
        return
    print("| forced sampling | seconds | useful tokens | useful tokens/s | vs rounds | pass rate |")
    print("|---|---|---|---|---|---|")
    for name, (s, tokens, ok) in totals.items():
        ratio = (tokens / s) / (base[1] / base[0])
        print(f"| {name} | {s:.1f} | {tokens} | {tokens / s:.1f} | {ratio:.2f}x | {ok / (args.prompts * args.rounds):.3f} |")


if __name__ == "__main__":
    main()
