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
    features: per row, (len(prompt) + counts[i] - 1, d) hidden states after a policy's frozen
        lower blocks at every token the sampler fed (prompt, then the trace but its last token),
        when sampling was asked to keep them (`capture`, RL with a frozen trunk); else None.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    counts: torch.Tensor
    texts: list[str] | None = None
    offsets: list[list[int]] | None = None
    features: list[torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.tokens.shape != self.mask.shape:
            raise ValueError(f"tokens {tuple(self.tokens.shape)} and mask {tuple(self.mask.shape)} differ")
        if self.counts.shape != self.tokens.shape[:1]:
            raise ValueError(f"counts {tuple(self.counts.shape)} does not match batch {self.tokens.shape[0]}")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def truncate(self, L: int) -> "Rollouts":
        """The rollouts cut to their first L >= 1 tokens, as if sampled with max_new_tokens=L.

        tokens/mask become (B, min(L, width)) views (a cut never pads), counts are clamped to L, and a
        text row longer than L tokens ends at the end offset of its L-th token, so a checker sees
        exactly the text those tokens spell (an answer that needed later tokens is gone).
        """
        if L < 1:
            raise ValueError(f"cannot truncate rollouts to {L} tokens")
        texts = offsets = None
        if self.texts is not None and self.offsets is not None:
            texts = [t[:o[L - 1]] if len(o) > L else t for t, o in zip(self.texts, self.offsets)]
            offsets = [o[:L] for o in self.offsets]
        return Rollouts(self.tokens[:, :L], self.mask[:, :L], self.counts.clamp(max=L), texts, offsets)

    def take(self, rows: torch.Tensor) -> "Rollouts":
        """The rollouts of `rows` (1-D int64 row indices), in that order."""
        pick = rows.tolist()
        return Rollouts(self.tokens[rows], self.mask[rows], self.counts[rows],
                        None if self.texts is None else [self.texts[i] for i in pick],
                        None if self.offsets is None else [self.offsets[i] for i in pick])


def id_rollouts(rows: Sequence[Sequence[int]], width: int, pad_id: int) -> Rollouts:
    """Rollouts of token id rows (each at most `width` long), without texts."""
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
    counts = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return Rollouts(tokens, torch.arange(width)[None] < counts[:, None], counts)


@runtime_checkable
class Task(Protocol):
    """A source of prompts with a ground-truth checker."""

    name: str

    def prompts(self, split: str, n: int, seed: int) -> Sequence[Any] | torch.Tensor:
        """n prompts from `split` ("train" or "test"), reproducible for a seed."""

    def check(self, prompts: Any, rollouts: Rollouts) -> torch.Tensor:
        """(B,) int64 first-success index T (1-based token index that completes a correct
        answer), or NEVER. Row i of `rollouts` answers prompt i."""

    def answer_keys(self, prompts: Any, rollouts: Rollouts) -> tuple[torch.Tensor, torch.Tensor]:
        """The final answer each rollout commits to, as comparable integer keys: answers (B, m)
        int64 (two rollouts give the same answer iff their rows are equal; majority voting
        compares them) and valid (B,) bool, False when the rollout commits to no answer."""


@runtime_checkable
class Sampler(Protocol):
    """Anything that writes traces for a task's prompts: the tiny GPT engine, transformers, vLLM."""

    def sample(self, prompts: Any, max_new_tokens: int, *, temperature: float = 1.0, seed: int = 0) -> Rollouts:
        """One rollout per prompt (repeat prompts to draw several), at most max_new_tokens each."""


def repeat_each(prompts: torch.Tensor | list, n: int) -> torch.Tensor | list:
    """Each of the B prompts n times in a row (B*n of them: row b*n+j is copy j of prompt b);
    prompts are a (B, k) tensor or a list."""
    if isinstance(prompts, torch.Tensor):
        return prompts.repeat_interleave(n, 0)
    return [p for p in prompts for _ in range(n)]


def take(prompts: torch.Tensor | Sequence[Any], rows: torch.Tensor) -> torch.Tensor | list:
    """The prompts (or prompt ids) at `rows` (1-D int64 indices), in that order: rows of a
    (B, k) tensor, or items of a list."""
    if isinstance(prompts, torch.Tensor):
        return prompts[rows]
    return [prompts[i] for i in rows.tolist()]


def id_lengths(ids: torch.Tensor | Sequence[Sequence[int]]) -> torch.Tensor:
    """(B,) int64 length of each prompt's ids: P for every row of a (B, P) tensor, or each
    id list's length."""
    if isinstance(ids, torch.Tensor):
        return torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long)
    return torch.tensor([len(r) for r in ids], dtype=torch.long)


def padded_ids(ids: torch.Tensor | Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """(B, P_max) int64 prompt ids, each row right-padded with `pad_id` (a (B, P) tensor as it is)."""
    if isinstance(ids, torch.Tensor):
        return ids
    out = torch.full((len(ids), max((len(r) for r in ids), default=0)), pad_id, dtype=torch.long)
    for i, r in enumerate(ids):
        out[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
    return out


def other_prompts(task: Task, exclude: Sequence[Any], n: int, seed: int) -> list[Any]:
    """n training-split text prompts whose texts are not among `exclude`'s, drawn with `seed`: a
    learner's validation set, disjoint from its training data and from the test set."""
    seen = {p.text for p in exclude}
    drawn: list[Any] = []
    for factor in (1, 2, 4):  # a small problem space repeats questions: draw more until n are new
        drawn = [p for p in task.prompts("train", factor * (n + len(seen)), seed) if p.text not in seen][:n]
        if len(drawn) == n:
            break
    if len(drawn) < n:
        raise ValueError(f"{task.name}: only {len(drawn)} validation prompts outside the training set, {n} wanted")
    return drawn


def gold_traces(prompts: Sequence[Any], homogeneous: bool) -> list[str | None]:
    """The expert of a text task: each problem's gold worked solution (None when it has none)."""
    if homogeneous:
        raise ValueError("expert=homogeneous is the planted task's control; a text task's expert is its gold "
                         "solutions, already homogeneous")
    return [p.solution or None for p in prompts]
