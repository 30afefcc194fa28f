"""What lets the base policy learn the hidden map under heterogeneous filler (issue 10).

Pretrains the base at one horizon H with each variant of the two knobs that matter, positions
(`model.position`: learned, both) and the data schedule (`budget_mix` with `curriculum` on,
shuffled, or no mix), runs the variants two at a time (one thread each), then samples each base
once at H on 256 held-out prompts (temperature 1) and prints success@H at every budget and the
pretraining wall time.

    python benchmarks/pretrain_ablation.py --level high --horizon 64 --steps 600 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

VARIANTS = {  # name -> overrides of PretrainConfig
    "both + curriculum (default)": {"model": {"position": "both"}, "budget_mix": [0.125, 0.25, 0.5, 1.0],
                                    "curriculum": True},
    "learned + curriculum": {"model": {"position": "learned"}, "budget_mix": [0.125, 0.25, 0.5, 1.0],
                             "curriculum": True},
    "both + shuffled mix": {"model": {"position": "both"}, "budget_mix": [0.125, 0.25, 0.5, 1.0],
                            "curriculum": False},
    "both, level data only": {"model": {"position": "both"}, "budget_mix": [1.0]},
}


def run(name: str, args: argparse.Namespace, out: str) -> dict:
    import torch

    from veriscale import progress
    from veriscale.config import deep_merge, from_dict
    from veriscale.learn.pretrain import PretrainConfig, pretrain
    from veriscale.policy.load import load_policy
    from veriscale.rewards import evaluate_budgets

    torch.set_num_threads(1)
    base = {"out": out, "traces": args.traces, "task": {"heterogeneity": args.level, "horizon": args.horizon},
            "optim": {"steps": args.steps, "batch_size": args.batch_size}}
    cfg = from_dict(PretrainConfig, deep_merge(base, VARIANTS[name]))
    start = time.perf_counter()
    with progress.silenced():
        pretrain(cfg)
    seconds = time.perf_counter() - start
    policy = load_policy(out)
    task = policy.task
    prompts = task.prompts("test", 256, 0)
    ro = policy.sample(prompts, args.horizon, seed=0)
    budgets = [b for b in (8, 16, 32, 64, 128) if b <= args.horizon]
    rows = evaluate_budgets(task.check(prompts, ro), ro.counts, budgets)
    return {"variant": name, "seconds": round(seconds, 1), **{f"success@{r.budget}": round(r.success, 3) for r in rows}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", default="high")
    ap.add_argument("--horizon", type=int, default=64)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--traces", type=int, default=8192)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(2) as pool:
        futures = [pool.submit(run, name, args, str(Path(tmp) / str(i))) for i, name in enumerate(VARIANTS)]
        for fut in futures:
            print(json.dumps(fut.result()))


if __name__ == "__main__":
    main()
