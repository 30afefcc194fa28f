"""Strict grading: only the gold number in canonical form after the answer cue earns credit, and
reading an answer never costs the main process time or memory (it runs in the grading pool)."""

import time
import tracemalloc

import pytest
import torch

from veriscale.grading import GradingConfig, TextProblem
from veriscale.tasks.base import NEVER, Rollouts

# (final answer written after the cue, gold, credited?)
TABLE = [
    ("18", "18", True),
    ("18.0", "18", True),  # the same value, decimals allowed
    ("18.", "18", True),  # the period ends the sentence
    ("-18", "-18", True),
    ("−18", "-18", True),  # the typographic minus sign
    ("**18**", "18", True),  # markdown emphasis is not part of the answer
    ("$18$", "18", True),
    ("1000", "1,000", True),  # a gold answer may carry separators; the answer may not
    ("1,000", "1000", False),
    ("18/7", "18", False),
    ("18e5", "18", False),
    ("18^2", "18", False),
    ("18 + 1", "18", False),
    ("18 apples", "18", False),
    ("١٨", "18", False),  # Arabic-Indic digits: ASCII digits only
    ("+18", "18", False),
    ("1e999999", "1", False),
    ("9**9**9**9", "9", False),
    ("9" * 65, "9" * 65, False),  # over the size limit, before any parsing
    ("\\boxed{18}", "18", True),
    ("\\boxed{18/7}", "18", False),
]


def rollouts(texts: list[str]) -> Rollouts:
    """One character per 'token' (offsets 1, 2, ...)."""
    L = max(len(t) for t in texts)
    counts = torch.tensor([len(t) for t in texts])
    return Rollouts(torch.zeros(len(texts), L, dtype=torch.long), torch.arange(L)[None] < counts[:, None], counts,
                    texts, [list(range(1, len(t) + 1)) for t in texts])


def test_only_the_canonical_gold_number_is_credited():
    texts = [f"Some work. Final answer: {answer}<eos>" for answer, _, _ in TABLE]
    problems = [TextProblem(text="q", gold=gold) for _, gold, _ in TABLE]
    T = GradingConfig(grade_workers=1).first_success(problems, rollouts(texts))
    assert [t < NEVER for t in T.tolist()] == [ok for _, _, ok in TABLE]


def test_no_cue_no_credit_unless_the_fallback_is_set():
    texts = ["3 + 15 = 18<eos>", "Final answer: 18<eos>"]
    problems = [TextProblem(text="q", gold="18")] * 2
    assert GradingConfig(grade_workers=1).first_success(problems, rollouts(texts)).tolist()[0] == NEVER
    with_fallback = GradingConfig(grade_workers=1, fallback_last_number=True)
    assert (with_fallback.first_success(problems, rollouts(texts)) < NEVER).all()


@pytest.mark.parametrize("limit", [1_000_000, 100_000_000])
def test_a_huge_unclosed_box_costs_the_main_process_nothing(limit):
    """50 MB of '\\boxed{{{...': over the size limit it is never read; under a raised limit it is
    read in a worker that overruns its time limit and is killed. Either way the main process
    spends well under a second of CPU and allocates no copy beyond one pickled message."""
    huge = "Final answer: \\boxed{" + "{1" * 25_000_000
    text = [huge, "Final answer: 18<eos>"]
    ro = Rollouts(torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool), torch.tensor([2, 2]),
                  text, [[10, len(huge)], [10, len(text[1])]])
    cfg = GradingConfig(grade_workers=2, grade_timeout=1.0, max_text_chars=limit)
    problems = [TextProblem(text="q", gold="18")] * 2
    tracemalloc.start()
    cpu = time.process_time()
    T = cfg.first_success(problems, ro)
    answers, valid = cfg.answer_keys(problems, ro)
    cpu = time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert T.tolist() == [NEVER, 2] and valid.tolist() == [False, True]
    assert cpu < 1.0 and peak < 2.5 * len(huge)
