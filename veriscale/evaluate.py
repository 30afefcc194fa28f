"""Evaluate a policy at many budgets from one sampling pass at the largest budget (SPEC §4).

Each held-out prompt gets `samples` traces of max(budgets) tokens; every smaller budget is read
off by truncation (`rewards.evaluate_budgets`). The metrics are over prompts x samples.
"""

from __future__ import annotations

import torch

from veriscale.rewards import BudgetMetrics, evaluate_budgets
from veriscale.tasks.base import Sampler, Task


def sample_and_check(sampler: Sampler, task: Task, prompts: torch.Tensor, budget: int, *, samples: int = 1,
                     temperature: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, counts), each (N * samples,), for `samples` traces per prompt at `budget` tokens."""
    rep = prompts.repeat_interleave(samples, 0)
    rollouts = sampler.sample(rep, budget, temperature=temperature, seed=seed)
    return task.check(rep, rollouts), rollouts.counts


def evaluate_policy(sampler: Sampler, task: Task, prompts: torch.Tensor, budgets: list[int], *, samples: int = 1,
                    temperature: float = 1.0, seed: int = 0) -> list[BudgetMetrics]:
    """J_H/H, success@H and tokens at every budget from one pass at max(budgets)."""
    T, counts = sample_and_check(sampler, task, prompts, max(budgets), samples=samples,
                                 temperature=temperature, seed=seed)
    return evaluate_budgets(T, counts, sorted(budgets))
