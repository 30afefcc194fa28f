"""Learner speed: verifier scoring (batched vs a naive per-example loop) and RL step time.

    python benchmarks/learners.py [--base RUN_DIR] [--traces 256] [--rl-steps 5] [--threads 2]

Without --base, a randomly initialised default-size GPT (4 layers, d_model 64) on the default
planted task at horizon 32 stands in for pi_b: a random policy never emits EOS early, so its
sampling is the worst case. Prints markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from veriscale.config import to_dict
from veriscale.learn.rl import RLConfig, train_rl
from veriscale.learn.verifier import Verifier
from veriscale.policy.engine import generate, generate_reference
from veriscale.policy.gpt import GPT, GPTConfig
from veriscale.policy.base import PolicyError
from veriscale.policy.load import load_policy
from veriscale.policy.tiny import GPTPolicy, resolve_model_config, save_gpt
from veriscale.tasks.planted import PlantedConfig, PlantedTask


def random_base(out: Path, horizon: int) -> Path:
    task_cfg = PlantedConfig(horizon=horizon)
    mcfg = resolve_model_config(GPTConfig(), PlantedTask(task_cfg))
    torch.manual_seed(0)
    return save_gpt(out, GPT(mcfg), {"stage": "pretrain", "task": to_dict(task_cfg)})


def load_gpt_base(base: Path) -> GPTPolicy:
    """The tiny-GPT policy of a run directory (a transformers policy is refused: the baselines
    below are the tiny GPT's engines)."""
    try:
        policy = load_policy(base)
    except PolicyError as e:
        raise SystemExit(f"error: --base: {e}") from None
    if not isinstance(policy, GPTPolicy):
        raise SystemExit(f"error: --base: {base}: a {policy.kind!r} policy, not a tiny-GPT run directory")
    return policy


def best_of(fn, repeats: int) -> float:
    """Minimum wall time of `repeats` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_scoring(base: Path, traces: int, repeats: int) -> str:
    policy = load_gpt_base(base)
    task = policy.task
    verifier = Verifier(policy).eval()
    prompts = task.prompts("test", traces, 0)
    ro = policy.sample(prompts, task.cfg.horizon, seed=0)
    prefixes = int(ro.counts.sum())
    fast = best_of(lambda: verifier.score(prompts, ro), repeats)
    slow = best_of(lambda: verifier.score_reference(prompts, ro), max(1, repeats // 2))
    assert torch.allclose(verifier.score(prompts, ro), verifier.score_reference(prompts, ro), atol=1e-5)
    return "\n".join([
        f"Verifier scoring of {traces} traces (mean length {prefixes / traces:.1f} tokens, horizon "
        f"{task.cfg.horizon}); every prefix scored.",
        "",
        "| scorer | seconds | prefixes/s | speed-up |",
        "|---|---|---|---|",
        f"| per-example loop (`score_reference`) | {slow:.3f} | {prefixes / slow:,.0f} | 1.0x |",
        f"| batched (`score`: length-sorted chunks of 64 rows, one forward each) | {fast:.3f} | {prefixes / fast:,.0f} | {slow / fast:.1f}x |",
    ])


def bench_rl(base: Path, steps: int) -> str:
    cfg = RLConfig(steps=steps, save_every=steps)
    with tempfile.TemporaryDirectory() as tmp:
        policy = load_gpt_base(base)  # trained in place; the baselines below reload pi_b
        out = train_rl(policy, policy.task, cfg, Path(tmp) / "rl")
        recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]  # skip warm-up
    step = sum(r["time_step"] for r in recs) / len(recs)
    sample = sum(r["time_sample"] for r in recs) / len(recs)
    tokens = sum(r["tokens"] for r in recs) / len(recs)
    # The same step's sampling with the full-recompute reference sampler (no KV cache).
    pi_b = load_gpt_base(base)
    model, task = pi_b.model, pi_b.task
    ids = task.encode(task.prompts("train", cfg.prompts_per_step, 0).repeat_interleave(cfg.G, 0))
    kw = dict(eos_id=task.eos, pad_id=task.pad, temperature=cfg.temperature)
    engine = best_of(lambda: generate(model, ids, task.cfg.horizon, generator=torch.Generator().manual_seed(0), **kw), 1)
    naive = best_of(lambda: generate_reference(model, ids, task.cfg.horizon,
                                               generator=torch.Generator().manual_seed(0), **kw), 1)
    B = cfg.prompts_per_step * cfg.G
    return "\n".join([
        f"RL step (defaults: {cfg.prompts_per_step} prompts x G={cfg.G} samples of up to {task.cfg.horizon} "
        f"tokens, mean {tokens:.0f} sampled tokens per step; mean of {len(recs)} steps after one warm-up).",
        "",
        "| RL step | seconds | share |",
        "|---|---|---|",
        f"| sampling (KV-cache engine) | {sample:.3f} | {sample / step:.0%} |",
        f"| rewards, forward/backward of policy and pi_b, AdamW | {step - sample:.3f} | {(step - sample) / step:.0%} |",
        f"| total | {step:.3f} | 100% |",
        "",
        f"Sampling the same {B} traces without the KV cache (`generate_reference`, full recompute per "
        f"token): {naive:.3f} s, vs {engine:.3f} s with the engine ({naive / engine:.1f}x).",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=None, help="pi_b run directory (default: random default-size GPT)")
    ap.add_argument("--horizon", type=int, default=32, help="task horizon of the random base")
    ap.add_argument("--traces", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rl-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        base = args.base or random_base(Path(tmp) / "base", args.horizon)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, base {args.base or 'random init'}\n")
        print(bench_scoring(base, args.traces, args.repeats) + "\n")
        print(bench_rl(base, args.rl_steps))


if __name__ == "__main__":
    main()
