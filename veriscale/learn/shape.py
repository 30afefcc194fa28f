"""Bases of controlled heterogeneity for a text policy: the policy fine-tuned on its own checked
samples, chosen to shape the spread of the first-success index T (SPEC §1: heterogeneity is the
spread of the base's return R_H over its traces of one prompt).

From r checked samples per prompt (learn/samples.py) each level writes at most one trace per
prompt, with the search-trace layout of learn/sft.py (`search_trace`):
  failures  k ~ Uniform{0 .. min(failures, failed samples)} of the prompt's failed samples of at
            most `failure_tokens` tokens, each followed by SFT's `bridge` ("Wait, that is wrong.
            Let me try again.");
  success   the prompt's shortest correct sample (`shortest`) or one drawn at random;
  checks    c ~ Uniform{0 .. min(checks, other successes)} of its other correct samples, each
            after `check_bridge` ("Wait, let me check that again.").
So at `none` (0 failures, 0 checks, shortest) every trace is one short correct answer and T is
concentrated; at `high` T spreads over up to 1 + failures attempts and the traces over lengths
and styles. Every level trains on the same number of trace tokens (`tokens`; 0 = the smallest
level's total over all prompts, every level of the table computed from the same samples), on
traces taken in one seeded prompt order until that many tokens are reached. The objective is
SFT's (learn/sft.py): masked next-token cross-entropy on the trace tokens, early-stopped on the
same level's traces of the samples' validation prompts.

The levels and their widths are ours: the paper controls the heterogeneity of its Llama bases but
does not say how (SPEC §2).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from veriscale.config import ConfigError, from_dict, knob, to_dict
from veriscale.learn.samples import Samples
from veriscale.learn.sft import SFTConfig, search_trace, train_sft
from veriscale.tasks.base import NEVER, Rollouts, Task

SHAPED_LEVELS = ("none", "low", "high")


@dataclass
class LevelShape:
    failures: int = knob(0, "most failed attempts before the success (each trace draws 0..failures)", min=0)
    checks: int = knob(0, "most later successes after the success (each trace draws 0..checks)", min=0)
    shortest: bool = knob(False, "the prompt's shortest correct sample as the success (else a random one)")


@dataclass
class ShapeConfig:
    prompts: int = knob(96, "training prompts whose checked samples shape the bases (ours)", min=1)
    r: int = knob(8, "checked samples per prompt (ours)", min=1)
    horizon: int = knob(256, "H of the samples (tokens)", min=1)
    temperature: float = knob(0.7, "sampling temperature of the samples", min=0.0)
    val_prompts: int = knob(16, "other training prompts (x r samples) whose traces stop the training", min=1)
    data_seed: int = knob(1000, "seed of the shaping prompts and samples (ours: apart from the study's seeds)",
                          min=0)
    tokens: int = knob(0, "trace tokens every level trains on (0 = the smallest level's total)", min=0)
    failure_tokens: int = knob(96, "longest failed sample used as a failure, in tokens (ours: the base's "
                                   "unfinished rambles would push a high-level trace past every budget)", min=1)
    seed: int = knob(0, "seed of the traces' draws (failures, success, checks) and of the prompt order", min=0)
    none: LevelShape = knob(LevelShape(0, 0, True), "level none: one shortest correct answer per prompt")
    low: LevelShape = knob(LevelShape(1, 1, False), "level low")
    high: LevelShape = knob(LevelShape(3, 2, False), "level high")
    sft: dict = knob({}, "SFT settings of the shaping (SFTConfig fields; expert, n and samples are set here)")

    def level(self, name: str) -> LevelShape:
        if name not in SHAPED_LEVELS:
            raise ConfigError(f"heterogeneity: a text study shapes bases at levels {', '.join(SHAPED_LEVELS)}, "
                              f"not {name!r}")
        return getattr(self, name)

    def sft_config(self) -> SFTConfig:
        """The shaping's SFT settings: its table, over n = prompts and search-style traces."""
        return from_dict(SFTConfig, {**self.sft, "expert": "search", "n": self.prompts, "data_seed": self.data_seed,
                                     "horizon": self.horizon}, "shape.sft.")


def attempts_of(policy, ro: Rollouts, T: torch.Tensor, r: int, failure_tokens: int) -> list[list[tuple[str, bool]]]:
    """Per prompt, its r samples as (text, correct) (rows i*r .. i*r+r-1), without the failed
    samples longer than `failure_tokens`."""
    return [[(policy.decode(ro.tokens[k, :ro.counts[k]].tolist()), bool(T[k] < NEVER)) for k in range(i * r, i * r + r)
             if T[k] < NEVER or ro.counts[k] <= failure_tokens] for i in range(len(ro) // r)]


def level_trace(attempts: list[tuple[str, bool]], shape: LevelShape, rng: random.Random, bridge: str,
                check_bridge: str) -> str | None:
    """One prompt's trace at a level (module docstring); None when no sample is correct."""
    good = [t for t, ok in attempts if ok]
    if not good:
        return None
    bad = [t for t, ok in attempts if not ok]
    first = min(range(len(good)), key=lambda i: len(good[i])) if shape.shortest else rng.randrange(len(good))
    k = rng.randint(0, min(shape.failures, len(bad)))
    c = rng.randint(0, min(shape.checks, len(good) - 1))
    others = [t for i, t in enumerate(good) if i != first]
    chosen = [(t, False) for t in rng.sample(bad, k)] + [(good[first], True)] + [(t, True) for t in others]
    return search_trace(chosen, k, bridge, c, check_bridge)


def level_texts(attempts: list[list[tuple[str, bool]]], shape: LevelShape, seed: int, sft: SFTConfig) -> list[str | None]:
    """Every prompt's trace at a level, each prompt with its own seeded draws (so a level's trace
    of a prompt does not depend on the other prompts)."""
    return [level_trace(a, shape, random.Random(seed * 1_000_003 + i), sft.bridge, sft.check_bridge)
            for i, a in enumerate(attempts)]


def within_budget(texts: list[str | None], lengths: list[int], budget: int, seed: int) -> list[str | None]:
    """The traces taken in one seeded prompt order until `budget` tokens are reached (the rest
    None); ValueError when all of them fall short."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    keep, total = set(), 0
    for i in order:
        if total >= budget:
            break
        if texts[i]:
            keep.add(i)
            total += lengths[i]
    if total < budget:
        raise ValueError(f"shape.tokens: the level's traces hold {total} tokens, below the {budget} every level "
                         f"trains on (raise shape.prompts or shape.r, or lower shape.tokens)")
    return [t if i in keep else None for i, t in enumerate(texts)]


def shaped_texts(policy, samples: Samples, cfg: ShapeConfig, level: str) -> tuple[list[str | None], list[str | None], int]:
    """(training traces within the token budget, validation traces, the budget) of one level."""
    sft = cfg.sft_config()
    attempts = attempts_of(policy, samples.rollouts, samples.T, samples.r, cfg.failure_tokens)
    # every level's traces and their token counts, from the same samples: the budget is the smallest total
    texts = {name: level_texts(attempts, cfg.level(name), cfg.seed, sft) for name in SHAPED_LEVELS}
    sizes = {name: [len(policy.encode_completion(t)) if t else 0 for t in ts] for name, ts in texts.items()}
    budget = cfg.tokens or min(sum(v) for v in sizes.values())
    val = level_texts(attempts_of(policy, samples.val_rollouts, samples.val_T, samples.r, cfg.failure_tokens),
                      cfg.level(level), cfg.seed + 1, sft)
    return within_budget(texts[level], sizes[level], budget, cfg.seed), val, budget


def shape_base(policy, task: Task, samples: Samples, cfg: ShapeConfig, level: str, out: str | Path) -> Path:
    """Fine-tune `policy` (in place) into the base of one heterogeneity level; writes the run
    directory `out` (an SFT run directory whose veriscale.json names the level and its budget)."""
    train, val, budget = shaped_texts(policy, samples, cfg, level)
    used = sum(len(policy.encode_completion(t)) for t in train if t)
    pick = {"train": train, "val": val}
    return train_sft(policy, task, cfg.sft_config(), out, samples, texts=lambda split: pick[split],
                     meta={"shaped_level": level, "shape": to_dict(cfg), "shape_budget": budget,
                           "shape_tokens": used})

