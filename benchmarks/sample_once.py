"""Sample once at H_max and truncate, versus sampling again for every budget (issue 4).

Both paths evaluate the same policy on the same held-out prompts at the same budgets; the
figures are wall-clock seconds in this one process, reported as a ratio.

    python benchmarks/sample_once.py --policy runs/base-high --budgets 4,6,8,12,16,24,32 --prompts 512
"""

from __future__ import annotations

import argparse
import time

import torch

from veriscale.evaluate import evaluate_method
from veriscale.policy.base import PolicyError
from veriscale.policy.load import load_policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--budgets", default="4,6,8,12,16,24,32")
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    try:
        sampler = load_policy(args.policy)  # a GPTPolicy samples with the KV-cache engine
    except PolicyError as e:
        ap.error(f"--policy: {e}")
    if sampler.kind != "gpt":
        ap.error(f"--policy: {args.policy}: a {sampler.kind!r} policy; this benchmark needs a tiny-GPT run directory")
    task = sampler.task
    prompts = task.prompts("test", args.prompts, 0)
    once, per_budget = [], []
    for _ in range(args.repeats):  # alternate the two paths so both see the same machine load
        t = time.perf_counter()
        evaluate_method("base", sampler, task, prompts, budgets)
        once.append(time.perf_counter() - t)
        t = time.perf_counter()
        for H in budgets:
            evaluate_method("base", sampler, task, prompts, [H])
        per_budget.append(time.perf_counter() - t)
    a, b = min(once), min(per_budget)
    print(f"| path | seconds (best of {args.repeats}) |\n|---|---|")
    print(f"| sample once at H={budgets[-1]}, truncate to {len(budgets)} budgets | {a:.3f} |")
    print(f"| sample again for each of {len(budgets)} budgets | {b:.3f} |")
    print(f"\nsaving: {b / a:.2f}x less time ({args.prompts} prompts, threads={torch.get_num_threads()})")


if __name__ == "__main__":
    main()
