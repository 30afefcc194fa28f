"""Pretrain the base policy pi_b on teacher traces of the planted task.

Objective: min_theta E_{x ~ train prompts, tau ~ teacher(x)} [ -sum_h log pi_theta(tau_h | x, tau_<h) ]
/ (trace tokens), i.e. masked next-token cross-entropy on trace tokens (EOS included), never on
prompt tokens. The teacher data is a fixed set of `traces` prompt/trace pairs, so pi_b learns g
imperfectly and copies the teacher's length distribution and error rate.

Run: `veriscale pretrain --config configs/pretrain.toml [--set optim.steps=200 ...]`.
Writes model.safetensors, config.json and metrics.jsonl (train and held-out loss) to `out`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from veriscale.config import knob, to_dict
from veriscale.learn.loop import OptimConfig, eval_nll, lm_batch, train_lm
from veriscale.policy import checkpoint
from veriscale.policy.gpt import GPT, GPTConfig
from veriscale.policy.sampler import resolve_model_config
from veriscale.tasks.planted import PlantedConfig, PlantedTask


@dataclass
class PretrainConfig:
    out: str = knob("runs/base", "run directory to write (created)")
    traces: int = knob(16384, "teacher traces in the pretraining set (one per training prompt)", min=1)
    heldout_traces: int = knob(512, "teacher traces on test prompts for held-out loss", min=1)
    data_seed: int = knob(0, "seed of the prompts and teacher traces", min=0)
    threads: int = knob(0, "torch CPU threads (0 = torch's default)", min=0)
    task: PlantedConfig = field(default_factory=PlantedConfig)
    model: GPTConfig = field(default_factory=GPTConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def teacher_dataset(task: PlantedTask, split: str, n: int, seed: int):
    """(inputs, targets, loss_mask) of n teacher traces on `split` prompts."""
    g = torch.Generator().manual_seed(seed)
    prompts = task.prompts(split, n, seed)
    return lm_batch(task.encode(prompts), task.teacher(prompts, g))


def pretrain(cfg: PretrainConfig) -> Path:
    """Train pi_b and write the run directory; returns its path."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    task = PlantedTask(cfg.task)
    mcfg = resolve_model_config(cfg.model, task)
    torch.manual_seed(cfg.optim.seed)
    model = GPT(mcfg)
    train = teacher_dataset(task, "train", cfg.traces, cfg.data_seed)
    held = teacher_dataset(task, "test", cfg.heldout_traces, cfg.data_seed + 1)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    with metrics_path.open("a") as f:
        train_lm(model, *train, cfg.optim, evaluate=lambda: {"heldout_loss": eval_nll(model, *held)},
                 log=lambda rec: f.write(json.dumps(rec) + "\n"), desc="pretrain")
    run_cfg = {"policy": "gpt", "stage": "pretrain", "model": to_dict(mcfg), "task": to_dict(cfg.task),
               "run": to_dict(cfg)}
    checkpoint.save(out, model, run_cfg)
    return out
