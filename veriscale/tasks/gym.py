"""reasoning-gym problems as a text task: basic_arithmetic, chain_sum, gsm_symbolic.

reasoning-gym (0.1.25, Apache-2.0) generates problems offline with gold answers. A prompt is
the problem's question followed by an answer-format instruction that asks the model to end with
a "Final answer:" cue (`instruction`; the per-dataset defaults below, documented in
docs/diagnostics.md). Grading is strict 0/1 (`grading.py`): reasoning-gym's own scorer gives a
well-formed wrong answer 0.01, here it is 0; the first-success index T is the token completing
the final answer (earlier mentions of the number do not count).

Splits: gsm_symbolic is split by template (a fixed share of its 85 templates, chosen by
`split_seed`, is held out for "test"), so test questions never share a template with training
ones; the arithmetic datasets are split by a stable hash of the question text.

gsm_symbolic's templates derive from the GSM8K test set (GSM-Symbolic, released CC-BY-NC-ND):
reports built on it must say so.

The defaults (two one-digit terms, + and -, no negative operands or parentheses) are the setting
where SmolLM2-135M-Instruct has signal; raise them with `--set gym.max_digits=2` etc.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import torch

from veriscale.config import ConfigError, knob
from veriscale.grading import GradingConfig, TextProblem
from veriscale.tasks.base import Rollouts

NAMES = ("basic_arithmetic", "chain_sum", "gsm_symbolic")
INSTRUCTIONS = {
    "basic_arithmetic": 'Write the equation with its result, then "Final answer:" and the number.',
    "chain_sum": 'Write the equation with its result, then "Final answer:" and the number.',
    "gsm_symbolic": 'Solve it step by step, then write "Final answer:" and the number.',
}
LICENCES = {
    "basic_arithmetic": "reasoning-gym basic_arithmetic (generated; Apache-2.0)",
    "chain_sum": "reasoning-gym chain_sum (generated; Apache-2.0)",
    "gsm_symbolic": "reasoning-gym gsm_symbolic (templates derived from the GSM8K test set via GSM-Symbolic, "
                    "CC-BY-NC-ND)",
}


@dataclass
class GymConfig(GradingConfig):
    name: Literal["basic_arithmetic", "chain_sum", "gsm_symbolic"] = knob("basic_arithmetic", "reasoning-gym dataset")
    min_terms: int = knob(2, "arithmetic: fewest terms", min=2)
    max_terms: int = knob(2, "arithmetic: most terms", min=2)
    min_digits: int = knob(1, "arithmetic: fewest digits per term", min=1)
    max_digits: int = knob(1, "arithmetic: most digits per term", min=1)
    operators: str = knob("+-", "basic_arithmetic: operators to draw from (any of +-*/)")
    negation: bool = knob(False, "arithmetic: allow negative operands such as '2 + -8'")
    parentheses: bool = knob(False, "basic_arithmetic: allow parentheses")
    instruction: str = knob("auto", "answer-format instruction appended to each question ('auto' = the "
                                    "dataset's default, asking to end with 'Final answer: N')")
    test_share: float = knob(0.2, "share held out for 'test' (gsm_symbolic: of templates; else: of questions)",
                             min=0.0, max=1.0)
    split_seed: int = knob(0, "seed of the train/test split", min=0)


def hash_split(text: str, test_share: float, seed: int) -> str:
    """"test" for a stable pseudo-random `test_share` of texts (same answer on every machine), else "train"."""
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") < test_share * 2**64 else "train"


GSM_GOLD_LINE = re.compile(r"\s*####[^\n]*$")
STEP = re.compile(r"\s*([+-])\s*(-?\d+)")


def worked_solution(entry: dict) -> str:
    """A gold worked solution ending in the cue and the answer: gsm_symbolic's `answer_cot` (its
    "#### N" line replaced by the cue);
    for an arithmetic expression of + and - only, one line per left-to-right step
    ("3 + 4 = 7. 7 - 2 = 5."); otherwise the expression and its value. The steps are computed
    from reasoning-gym's own expression (never model text) and must reach its gold answer."""
    gold = str(entry["answer"])
    cot = entry["metadata"].get("answer_cot")
    if cot:
        return GSM_GOLD_LINE.sub("", cot.strip()) + f"\nFinal answer: {gold}"
    expr = entry["metadata"]["expression"].strip()
    first = re.match(r"-?\d+", expr)
    steps = list(STEP.finditer(expr, first.end())) if first else []
    if first and steps and steps[-1].end() == len(expr):
        acc, lines = Fraction(first.group()), []
        for m in steps:
            val = acc + Fraction(m.group(2)) if m.group(1) == "+" else acc - Fraction(m.group(2))
            lines.append(f"{acc} {m.group(1)} {m.group(2)} = {val}.")
            acc = val
        if acc == Fraction(gold):
            return f"{' '.join(lines)} Final answer: {gold}"
    return f"{expr} = {gold}. Final answer: {gold}"


def _dataset_kwargs(cfg: GymConfig) -> dict:
    if cfg.name == "gsm_symbolic":
        return {}
    kw = dict(min_terms=cfg.min_terms, max_terms=cfg.max_terms, min_digits=cfg.min_digits,
              max_digits=cfg.max_digits, allow_negation=cfg.negation)
    if cfg.name == "basic_arithmetic":
        kw.update(operators=tuple(cfg.operators), allow_parentheses=cfg.parentheses)
    return kw


class GymTask:
    """A reasoning-gym dataset behind the Task protocol; prompts are `TextProblem`s."""

    def __init__(self, cfg: GymConfig):
        import reasoning_gym

        self.cfg, self.rg = cfg, reasoning_gym
        self.name = f"gym:{cfg.name}"
        self.source = LICENCES[cfg.name]
        self.instruction = INSTRUCTIONS[cfg.name] if cfg.instruction == "auto" else cfg.instruction
        try:  # probe the configuration once, so a bad value fails here with reasoning-gym's message
            reasoning_gym.create_dataset(cfg.name, size=1, seed=0, **_dataset_kwargs(cfg))
        except (AssertionError, ValueError, TypeError) as e:
            raise ConfigError(f"gym: reasoning-gym rejects this {cfg.name} configuration: {e}") from None
        self.test_templates: set[int] = set()
        if cfg.name == "gsm_symbolic":
            from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import tasks_ok

            templates = sorted(tasks_ok)
            random.Random(cfg.split_seed).shuffle(templates)
            self.test_templates = set(templates[:round(cfg.test_share * len(templates))])

    def _split_of(self, entry: dict, template: int | None) -> str:
        if template is not None:
            return "test" if template in self.test_templates else "train"
        return hash_split(entry["question"], self.cfg.test_share, self.cfg.split_seed)

    def prompts(self, split: str, n: int, seed: int) -> list[TextProblem]:
        """n problems of `split`, reproducible for a seed (drawn from reasoning-gym's stream `seed`)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        size = 50 * n + 1000  # problems are generated lazily; this only bounds the search
        ds = self.rg.create_dataset(self.cfg.name, size=size, seed=seed, **_dataset_kwargs(self.cfg))
        templates = getattr(ds, "task_indices", None)
        out: list[TextProblem] = []
        for idx in range(size):
            entry = ds[idx]
            template = templates[idx] if templates is not None else None
            if self._split_of(entry, template) != split:
                continue
            out.append(TextProblem(text=f"{entry['question']} {self.instruction}", gold=str(entry["answer"]),
                                   form="number", judge="exact",
                                   group=f"template {template}" if template is not None else "",
                                   solution=worked_solution(entry)))
            if len(out) == n:
                return out
        raise ValueError(f"{self.name}: only {len(out)} {split} problems among {size} drawn; "
                         f"change gym.test_share (now {self.cfg.test_share})")

    def check(self, prompts: list[TextProblem], rollouts: Rollouts) -> torch.Tensor:
        """Task protocol: (B,) T of each rollout, strict 0/1 grading (see grading.py)."""
        return self.cfg.first_success(prompts, rollouts)

    def answer_keys(self, prompts: list[TextProblem], rollouts: Rollouts) -> tuple[torch.Tensor, torch.Tensor]:
        """Task protocol: (B, 1) keys of each rollout's final answer, and (B,) valid (see grading.py)."""
        return self.cfg.answer_keys(prompts, rollouts)
