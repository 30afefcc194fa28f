"""The verifier-free (VF) learner: behaviour cloning / SFT on n expert traces.

Objective (SPEC §1, VF): with D = {(x_i, tau_i)}_{i<=n'} expert traces on training prompts,
    min_theta  - sum_i sum_{h <= |tau_i|} log pi_theta(tau_i,h | x_i, tau_i,<h)  /  sum_i |tau_i|,
masked next-token cross-entropy on trace tokens only (EOS included, prompt tokens never),
averaged over tokens. The expert is the task's teacher conditioned on success within the task
horizon (`heterogeneous`, its correct traces finish at widely different lengths) or the
homogeneous control that answers at once (`homogeneous`). pi_theta starts from the base policy
pi_b (`init = "base"`) or from a fresh initialisation of the same architecture (`"scratch"`).

A share `heldout` of the n prompts is held out: their expert NLL is evaluated every
`optim.eval_every` steps; the best checkpoint by that NLL is kept on disk and training stops
after `patience` evaluations without improvement. So the learner sees exactly n expert traces.

Run: `veriscale train sft --base runs/base-high --out runs/sft [--config configs/sft.toml]`.
Writes model.safetensors, config.json (policy "gpt", stage "sft") and metrics.jsonl to `out`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from veriscale.config import knob, to_dict
from veriscale.learn.loop import BestCheckpoint, OptimConfig, eval_nll, heldout_split, jsonl_log, lm_batch, train_lm
from veriscale.policy import checkpoint
from veriscale.policy.gpt import GPT
from veriscale.policy.sampler import load_gpt_policy
from veriscale.tasks.planted import PlantedTask


@dataclass
class SFTOptimConfig(OptimConfig):
    """SFT's own defaults (ours): about 15 s at the default model size and horizon 32 on 2
    shared CPU cores. A subclass, so overriding one optim key keeps the other SFT defaults."""

    steps: int = knob(60, "optimizer steps (an upper bound: early stopping may end sooner)", min=1)
    batch_size: int = knob(32, "sequences per step", min=1)
    lr: float = knob(2e-4, "peak learning rate (below pretraining's: fine-tuning from pi_b)", min=0.0)
    warmup: int = knob(5, "linear warm-up steps", min=0)
    weight_decay: float = knob(0.0, "AdamW weight decay", min=0.0)
    eval_every: int = knob(5, "steps between held-out evaluations (early-stopping checks)", min=1)


@dataclass
class SFTConfig:
    n: int = knob(128, "n: expert traces (one per training prompt), the VF data budget; the held-out "
                       "share is taken from them", min=2)
    expert: Literal["heterogeneous", "homogeneous"] = knob(
        "heterogeneous", "expert traces: teacher conditioned on success, or the homogeneous control (l = 0)")
    init: Literal["base", "scratch"] = knob("base", "start from pi_b's weights or from a fresh initialisation")
    heldout: float = knob(0.1, "share of the n traces held out for early stopping (ours)", min=0.01, max=0.5)
    patience: int = knob(3, "held-out evaluations without improvement before stopping (0 = never; ours)", min=0)
    data_seed: int = knob(0, "seed of the training prompts and expert traces", min=0)
    threads: int = knob(0, "torch CPU threads (0 = torch's default)", min=0)
    optim: SFTOptimConfig = field(default_factory=SFTOptimConfig)


def expert_dataset(task: PlantedTask, prompts: torch.Tensor, homogeneous: bool, seed: int):
    """(inputs, targets, loss_mask) of one expert trace per prompt at the task horizon."""
    g = torch.Generator().manual_seed(seed)
    return lm_batch(task.encode(prompts), task.expert(prompts, g, homogeneous=homogeneous))


def train_sft(base_dir: str | Path, cfg: SFTConfig, out: str | Path) -> Path:
    """Clone n expert traces into pi_theta and write the run directory `out`; returns it."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, task, _ = load_gpt_policy(base_dir)
    if cfg.init == "scratch":
        torch.manual_seed(cfg.optim.seed)
        model = GPT(model.cfg)
    prompts = task.prompts("train", cfg.n, cfg.data_seed)
    data = expert_dataset(task, prompts, cfg.expert == "homogeneous", cfg.data_seed)
    train, held = heldout_split(cfg.n, cfg.heldout)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def evaluate() -> dict:
        return {"heldout_nll": eval_nll(model, *(x[held] for x in data))}

    def save() -> None:
        checkpoint.save(out, model, {"policy": "gpt", "stage": "sft", "model": to_dict(model.cfg),
                                     "task": to_dict(task.cfg), "run": to_dict(cfg), "base": str(base_dir),
                                     "best_step": best.best_step})

    best = BestCheckpoint("heldout_nll", cfg.patience, save)
    with jsonl_log(out / "metrics.jsonl") as log:
        init = {"step": -1, **evaluate()}  # step -1: the initial policy, before any update
        log(init)
        best.update(init)
        train_lm(model, *(x[train] for x in data), cfg.optim, evaluate=evaluate, log=log, desc="sft",
                 stop=best.update)
    return out
