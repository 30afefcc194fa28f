"""The tiny GPT behind the `Sampler` interface, the planted task's expert as a `Sampler`, and
loading a GPT policy from a run directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from veriscale.config import from_dict
from veriscale.policy import checkpoint
from veriscale.policy.engine import generate
from veriscale.policy.gpt import GPT, GPTConfig
from veriscale.tasks.base import Rollouts
from veriscale.tasks.planted import PlantedConfig, PlantedTask


class GPTSampler:
    """Samples planted-task traces with the KV-cache engine; prompts are (B, k) content tokens."""

    def __init__(self, model: GPT, task: PlantedTask, top_k: int = 0):
        self.model, self.task, self.top_k = model.eval(), task, top_k

    def sample(self, prompts: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
               seed: int = 0) -> Rollouts:
        g = torch.Generator().manual_seed(seed)
        return generate(self.model, self.task.encode(prompts), max_new_tokens, eos_id=self.task.eos,
                        pad_id=self.task.pad, temperature=temperature, top_k=self.top_k, generator=g)


class ExpertSampler:
    """The planted task's expert process (teacher with expert_q, conditioned on success within
    the budget) behind the `Sampler` interface, so it is evaluated exactly like a policy.
    It writes its traces directly; temperature does not apply to it."""

    def __init__(self, task: PlantedTask):
        self.task = task

    def sample(self, prompts: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
               seed: int = 0) -> Rollouts:
        return self.task.expert(prompts, torch.Generator().manual_seed(seed), budget=max_new_tokens)


def resolve_model_config(model: GPTConfig, task: PlantedTask) -> GPTConfig:
    """Fill vocab_size / max_seq_len left at 0 from the task (prompt BOS x SEP + horizon)."""
    vocab = model.vocab_size or task.vocab_size
    seq = model.max_seq_len or task.cfg.prompt_len + 2 + task.cfg.horizon
    return dataclasses.replace(model, vocab_size=vocab, max_seq_len=seq)


def load_gpt_policy(run_dir: str | Path) -> tuple[GPT, PlantedTask, dict]:
    """(model, task, config dict) of a run directory written by pretraining, SFT or RL."""
    cfg = checkpoint.read_config(run_dir)
    if cfg.get("policy") != "gpt":
        raise ValueError(f"{run_dir}: config.json has policy={cfg.get('policy')!r}, expected 'gpt'")
    task = PlantedTask(from_dict(PlantedConfig, cfg["task"]))
    model = GPT(from_dict(GPTConfig, cfg["model"]))
    checkpoint.load_state(run_dir, model)
    return model.eval(), task, cfg
