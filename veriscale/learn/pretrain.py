"""Pretrain the base policy pi_b on teacher traces of the planted task.

Objective: min_theta E_{x ~ train prompts, tau ~ teacher(x)} [ -sum_h log pi_theta(tau_h | x, tau_<h) ]
/ (trace tokens), i.e. masked next-token cross-entropy on trace tokens (EOS included), never on
prompt tokens. The teacher data is a fixed set of `traces` prompt/trace pairs, so pi_b learns g
imperfectly and copies the teacher's length distribution and error rate.

Run: `veriscale train pretrain --config configs/pretrain.toml [--set optim.steps=200 ...]`.
Writes the run directory (model.safetensors, config.json, veriscale.json) and metrics.jsonl
(train and held-out loss) to `out`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from veriscale.config import knob, to_dict
from veriscale.learn.data import lm_rows
from veriscale.learn.loop import FullLogits, OptimConfig, eval_nll, jsonl_log, train_lm
from veriscale.policy.gpt import GPT, GPTConfig
from veriscale.policy.tiny import resolve_model_config, save_gpt
from veriscale.tasks.planted import PlantedConfig, PlantedTask


@dataclass
class PretrainConfig:
    out: str = knob("runs/base", "run directory to write (created)")
    traces: int = knob(16384, "teacher traces in the pretraining set (one per training prompt)", min=1)
    heldout_traces: int = knob(512, "teacher traces on test prompts for held-out loss", min=1)
    data_seed: int = knob(0, "seed of the prompts and teacher traces", min=0)
    budget_mix: list[float] = knob([0.125, 0.25, 0.5, 1.0], "fractions f of H: the teacher traces are split evenly over them; a "
                                   "share with f < 1 draws its filler as the high level does at budget f*H (at "
                                   "least 0..1 tokens), the f = 1 share is the level's own data; trace length "
                                   "stays H (ours)", min=0.0, max=1.0)
    curriculum: bool = knob(True, "train on the budget_mix shares one after another in increasing f, "
                                  "optim.steps split evenly, each stage with its own warm-up and decay; "
                                  "False: one shuffled mix (ours)")
    threads: int = knob(0, "torch CPU threads (0 = torch's default)", min=0)
    task: PlantedConfig = field(default_factory=PlantedConfig)
    model: GPTConfig = field(default_factory=GPTConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def teacher_dataset(task: PlantedTask, split: str, n: int, seed: int, spread_at: int | None = None):
    """(inputs, targets, loss_mask) of n teacher traces on `split` prompts; `spread_at` draws the
    filler lengths as at that budget (the trace length stays the task horizon)."""
    g = torch.Generator().manual_seed(seed)
    prompts = task.prompts(split, n, seed)
    return lm_rows(task.encode(prompts), task.teacher(prompts, g, spread_at=spread_at), task.pad)


def warmup_task(task: PlantedTask) -> PlantedTask:
    """The same task (same hidden map g) with the high level's filler, at least 0..1 tokens: the
    data of the curriculum's early stages. Variable filler from the first step is what makes the
    base learn to find a candidate wherever it starts; measured, stages of fixed filler (what
    the low level gives at H/8) teach a position-bound solution that later stages do not undo."""
    return PlantedTask(replace(task.cfg, heterogeneity="high",
                               spread_scale=max(task.cfg.spread_scale, task.cfg.low_scale)))


def stages(cfg: PretrainConfig, task: PlantedTask) -> list[tuple[tuple[torch.Tensor, ...], OptimConfig]]:
    """(data, optim) per training stage: the budget_mix shares in increasing order with a share
    of the steps each (curriculum), or all shares shuffled together in one stage."""
    H, mix = task.cfg.horizon, sorted(cfg.budget_mix)
    share = max(1, cfg.traces // len(mix))
    early = warmup_task(task)

    def spread_at(f: float) -> int:  # the smallest budget whose high spread reaches 0..1
        lo = math.ceil((1 / max(early.cfg.spread_scale, 1e-9)) ** (1 / max(early.cfg.spread_exponent, 1e-9)))
        return max(lo, round(f * H))

    parts = [teacher_dataset(task, "train", share, cfg.data_seed + i) if f >= 1 else
             teacher_dataset(early, "train", share, cfg.data_seed + i, spread_at(f)) for i, f in enumerate(mix)]
    if not cfg.curriculum or len(parts) == 1:
        return [(tuple(torch.cat(x) for x in zip(*parts)), cfg.optim)]
    steps = max(1, cfg.optim.steps // len(parts))
    return [(data, replace(cfg.optim, steps=steps, seed=cfg.optim.seed + i)) for i, data in enumerate(parts)]


def pretrain(cfg: PretrainConfig) -> Path:
    """Train pi_b and write the run directory; returns its path."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    task = PlantedTask(cfg.task)
    mcfg = resolve_model_config(cfg.model, task)
    torch.manual_seed(cfg.optim.seed)
    model = GPT(mcfg)
    lm = FullLogits(model)  # what the loop trains: the loss reads the logits at every position
    held = teacher_dataset(task, "test", cfg.heldout_traces, cfg.data_seed + 1)  # the level's own traces
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with jsonl_log(out / "metrics.jsonl") as log:
        for i, (data, optim) in enumerate(stages(cfg, task)):
            train_lm(lm, *data, optim, evaluate=lambda: {"heldout_loss": eval_nll(lm, *held)},
                     log=lambda rec, i=i: log({**rec, "stage": i}), desc=f"pretrain {i + 1}")
    return save_gpt(out, model, {"stage": "pretrain", "task": to_dict(cfg.task), "run": to_dict(cfg)})
