"""The contracts every task and every sampler honour.

A task owns its prompts and its checker; a sampler turns prompts into `Rollouts`. The checker
returns the first-success index T of each rollout, and everything downstream (rewards, RL,
verifier labels, reports) is computed from T, so the RL reward and the reported metric always
call the same checker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

# T for a trace that never produces a correct answer (SPEC: T = infinity). An integer sentinel
# keeps T an int64 tensor; `rewards.returns` treats any T > H as failure, so its exact value
# only has to exceed every budget.
NEVER = 2**40


@dataclass
class Rollouts:
    """Sampled continuations of a batch of prompts.

    tokens: (B, L) int64 generated token ids, padded with the sampler's pad id after each row's end.
    mask:   (B, L) bool, True at sampled tokens (the tokens a learner is charged for and trains on).
    counts: (B,) int64 number of generated tokens per row (= mask.sum(1)); the compute charged.
    texts:  decoded continuation per row, for text tasks (None for token tasks).
    offsets: per row, the end character offset in `texts[i]` of every generated token, so a
        checker that finds an answer span in text can map it back to a token index.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    counts: torch.Tensor
    texts: list[str] | None = None
    offsets: list[list[int]] | None = None

    def __post_init__(self) -> None:
        if self.tokens.shape != self.mask.shape:
            raise ValueError(f"tokens {tuple(self.tokens.shape)} and mask {tuple(self.mask.shape)} differ")
        if self.counts.shape != self.tokens.shape[:1]:
            raise ValueError(f"counts {tuple(self.counts.shape)} does not match batch {self.tokens.shape[0]}")

    def __len__(self) -> int:
        return self.tokens.shape[0]


@runtime_checkable
class Task(Protocol):
    """A source of prompts with a ground-truth checker."""

    name: str

    def prompts(self, split: str, n: int, seed: int) -> Sequence[Any] | torch.Tensor:
        """n prompts from `split` ("train" or "test"), reproducible for a seed."""

    def check(self, prompts: Any, rollouts: Rollouts) -> torch.Tensor:
        """(B,) int64 first-success index T (1-based token index that completes a correct
        answer), or NEVER. Row i of `rollouts` answers prompt i."""


@runtime_checkable
class Sampler(Protocol):
    """Anything that writes traces for a task's prompts: the tiny GPT engine, transformers, vLLM."""

    def sample(self, prompts: Any, max_new_tokens: int, *, temperature: float = 1.0, seed: int = 0) -> Rollouts:
        """One rollout per prompt (repeat prompts to draw several), at most max_new_tokens each."""
