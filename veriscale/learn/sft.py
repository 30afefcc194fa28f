"""The verifier-free (VF) learner: behaviour cloning / SFT on n expert traces.

Objective (SPEC §1, VF): with D = {(x_i, tau_i)}_{i<=n'} expert traces on training prompts,
    min_theta  - sum_i sum_{h <= |tau_i|} log pi_theta(tau_i,h | x_i, tau_i,<h)  /  sum_i |tau_i|,
masked next-token cross-entropy on trace tokens only (EOS included, prompt tokens never),
averaged over tokens. The expert is the task's teacher conditioned on success within the task
horizon (`heterogeneous`, its correct traces finish at widely different lengths) or the
homogeneous control that answers at once (`homogeneous`). pi_theta starts from the base policy
pi_b (`init = "base"`) or from a fresh initialisation of the same architecture (`"scratch"`).

The learner trains on all n traces for up to `epochs` passes (at most `optim.steps` steps) and
keeps the weights with the lowest NLL on `val_traces` expert traces of other training-split
prompts (disjoint from the n and from the test set; used only to choose when to stop, and
counted in the run's config as `validation_traces`). Early stopping never acts inside the
warm-up. Before and after training it measures the expert NLL on `test_traces` expert traces of
held-out test prompts (`test_nll_before`, `test_nll_after` in config.json): the record that the
learner moved from its start.

Run: `veriscale train sft --base runs/base-high --out runs/sft [--config configs/sft.toml]`.
Writes model.safetensors, config.json (policy "gpt", stage "sft") and metrics.jsonl to `out`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from veriscale.config import knob, to_dict
from veriscale.learn.loop import BestCheckpoint, OptimConfig, epoch_steps, eval_nll, jsonl_log, lm_batch, train_lm
from veriscale.policy import checkpoint
from veriscale.policy.gpt import GPT
from veriscale.policy.sampler import load_gpt_policy
from veriscale.tasks.planted import PlantedTask


@dataclass
class SFTOptimConfig(OptimConfig):
    """SFT's own defaults (ours). A subclass, so overriding one optim key keeps the others."""

    steps: int = knob(600, "most optimizer steps (epochs and early stopping usually end sooner)", min=1)
    batch_size: int = knob(32, "sequences per step", min=1)
    lr: float = knob(1e-3, "peak learning rate", min=0.0)
    warmup: int = knob(10, "linear warm-up steps (early stopping waits for them)", min=0)
    weight_decay: float = knob(0.0, "AdamW weight decay", min=0.0)
    eval_every: int = knob(10, "steps between validation evaluations (early-stopping checks)", min=1)


@dataclass
class SFTConfig:
    n: int = knob(128, "n: expert traces (one per training prompt), the VF data budget, all trained on", min=1)
    expert: Literal["heterogeneous", "homogeneous"] = knob(
        "heterogeneous", "expert traces: the level's expert (teacher with expert_q, conditioned on success), "
                         "or the homogeneous control (l = 0, always right)")
    init: Literal["base", "scratch"] = knob("base", "start from pi_b's weights or from a fresh initialisation")
    epochs: int = knob(40, "most passes over the n traces (ours)", min=1)
    val_traces: int = knob(256, "expert traces on other training prompts, for early stopping only (ours)", min=1)
    test_traces: int = knob(256, "expert traces on test prompts, for the NLL before/after (ours)", min=1)
    patience: int = knob(5, "validation evaluations without improvement before stopping (0 = never; ours)", min=0)
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
    homogeneous = cfg.expert == "homogeneous"
    prompts = task.prompts("train", cfg.n, cfg.data_seed)
    data = expert_dataset(task, prompts, homogeneous, cfg.data_seed)
    val = expert_dataset(task, task.validation_prompts(prompts, cfg.val_traces, cfg.data_seed + 7919),
                         homogeneous, cfg.data_seed + 1)
    test = expert_dataset(task, task.prompts("test", cfg.test_traces, 0), homogeneous, 12345)
    optim = replace(cfg.optim, steps=epoch_steps(cfg.optim.steps, cfg.epochs, cfg.n, cfg.optim.batch_size))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    test_before = eval_nll(model, *test)

    def evaluate() -> dict:
        return {"val_nll": eval_nll(model, *val)}

    def save() -> None:
        checkpoint.save(out, model, {"policy": "gpt", "stage": "sft", "model": to_dict(model.cfg),
                                     "task": to_dict(task.cfg), "run": to_dict(cfg), "base": str(base_dir),
                                     "best_step": best.best_step, "steps_planned": optim.steps,
                                     "training_traces": cfg.n, "validation_traces": cfg.val_traces,
                                     "test_nll_before": test_before, "test_nll_after": eval_nll(model, *test)})

    best = BestCheckpoint("val_nll", cfg.patience, save, min_step=optim.warmup)
    with jsonl_log(out / "metrics.jsonl") as log:
        init = {"step": -1, **evaluate(), "test_nll": test_before}  # step -1: the initial policy
        log(init)
        best.update(init)
        train_lm(model, *data, optim, evaluate=evaluate, log=log, desc="sft", stop=best.update)
    return out
