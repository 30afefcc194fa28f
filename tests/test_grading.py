"""Grading: final-answer extraction, strict judges, the first-success token index, and the
sandbox (adversarial strings score 0 within the wall-clock limit; model text is never run)."""

import time

import pytest
import torch

from veriscale.grading import GradingConfig, GradingPool, TextProblem, answer_span, judge_exact
from veriscale.tasks.base import NEVER, Rollouts


def _answer(text, form="number", fallback=False):
    span = answer_span(text, form, fallback)
    return None if span is None else text[span[0]:span[1]]


@pytest.mark.parametrize("text, expected", [
    ("7 - 0 = 7. Final answer: 7<eos>", "7"),
    ("Final answer: 3\nwait, Final Answer: -12.<eos>", "-12"),  # the last cue wins
    ("The final answer is 1,234 apples.<eos>", "1,234 apples"),  # the whole answer line
    ("**Final answer:** $7$. Done.", "7"),  # wrappers go; a sentence ends the line
    ("Final answer:\n 7.5\n", "7.5"),
    ("so 5 + 4 = 9<eos>", None),  # no cue: no answer (the fallback is off)
    ("#### 42\n", "42"),
    ("Final answer: N<eos>", "N"),
    ("Final answer: <eos>", None),
    ("Final answer: 12", None),  # cut at the budget: might have continued "123"
    ("Final answer: 12.", None),  # ... or "12.5"
    ("we get \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # a closed box needs nothing after it
    ("Final answer: \\boxed{3", None),  # unclosed box
    ("\\boxed{2} then Final answer: 5 ok\n", "5 ok"),  # a cue after the box wins
])
def test_answer_span(text, expected):
    assert _answer(text) == expected


def test_answer_span_forms():
    assert _answer("so 5 + 4 = 9.", fallback=True) == "9"  # the last number, with something after it
    assert _answer("so 5 + 4 = 9", fallback=True) is None
    assert _answer("so 5 + 4 = 9.", form="boxed", fallback=True) is None  # no last-number fallback for boxes
    assert _answer("Final answer: 9.<eos>", form="boxed") == "9"


def test_judge_exact_is_strict():
    assert judge_exact("1000", "1,000") and judge_exact("-3", "-3.0") and judge_exact("−3", "-3")
    assert not judge_exact("12", "1") and not judge_exact("3 apples", "3") and not judge_exact("1/2", "0.5")
    assert not judge_exact("1,000", "1000")  # not canonical


def _rollouts(texts, budget=None):
    """Rollouts of texts cut into one-character 'tokens' (offsets 1, 2, ...)."""
    L = budget or max(len(t) for t in texts)
    counts = torch.tensor([len(t) for t in texts])
    mask = torch.arange(L)[None] < counts[:, None]
    return Rollouts(tokens=torch.zeros(len(texts), L, dtype=torch.long), mask=mask, counts=counts, texts=texts,
                    offsets=[list(range(1, len(t) + 1)) for t in texts])


def test_first_success_is_the_token_completing_the_final_answer():
    texts = ["7 - 0 = 7. Final answer: 7.<eos>", "7 - 0 = 7. Final answer: 70.<eos>", "7 is it. Final answer: 7"]
    T = GradingConfig().first_success([TextProblem(text="q", gold="7")] * 3, _rollouts(texts))
    # Row 0: the earlier "7"s do not count; the answer ends at character 26 -> T = 26.
    assert T[0] == texts[0].index("answer: 7") + len("answer: 7")
    assert T[1] == NEVER  # wrong final answer, although 7 appears earlier
    assert T[2] == NEVER  # cut right after the answer: incomplete


def test_first_success_multi_char_tokens():
    # Tokens "Final", " answer", ":", " 1", "2", "<eos>": the answer "12" completes at token 5.
    pieces = ["Final", " answer", ":", " 1", "2", "<eos>"]
    text, offs = "", []
    for p in pieces:
        text += p
        offs.append(len(text))
    r = Rollouts(tokens=torch.zeros(1, 8, dtype=torch.long), mask=torch.arange(8)[None] < 6,
                 counts=torch.tensor([6]), texts=[text], offsets=[offs])
    assert GradingConfig().first_success([TextProblem(text="q", gold="12")], r).tolist() == [5]


ADVERSARIAL = [
    ("math_verify", "9^{9^{9^{9}}}", "1"),  # sympy would try to build the number
    ("math_verify", "\\frac{" * 3000 + "1" + "}{2}" * 3000, "1"),  # deeply nested LaTeX
    ("math_verify", "__import__('os').system('touch {marker}')", "0"),  # code is text, never run
    ("exact", "9**9**9**9", "1"),
    ("exact", "9" * 100000, "9"),
]


def test_adversarial_answers_score_zero_within_the_timeout(tmp_path):
    marker = tmp_path / "pwned"
    items = [(j, p.replace("{marker}", str(marker)), g) for j, p, g in ADVERSARIAL]
    items.append(("math_verify", "\\frac{1}{2}", "0.5"))  # and the pool still grades correctly after kills
    timeout = 3.0  # generous: a legitimate item must not time out on a loaded machine
    start = time.monotonic()
    with GradingPool(workers=2, timeout=timeout) as pool:
        ok = pool.grade(items)
    elapsed = time.monotonic() - start
    assert ok == [False] * len(ADVERSARIAL) + [True]
    # Two items hang and are killed after `timeout`, in parallel on two workers; the rest are fast.
    assert elapsed < 2 * timeout + 3.0
    assert not marker.exists()


def test_math_verify_equivalences():
    items = [("math_verify", "\\frac{2}{4}", "\\frac{1}{2}"), ("math_verify", "\\sqrt{2}^2", "2"),
             ("math_verify", "3", "4"), ("math_verify", "", "1")]
    with GradingPool(workers=1, timeout=5.0) as pool:
        assert pool.grade(items) == [True, True, False, False]
