"""reasoning-gym's own answer checkers: which the project may call, and how a free-text answer
reaches them (tasks/gym.py uses this for every dataset whose answers are not numbers).

- A dataset whose first PROBE gold answers are numbers is graded by the strict number grader
  (`numeric_answers`); any other by its `score_answer` on the final-answer span
  (`text_answer_span`), in the grading pool's killable workers (`judge_checker`, registered in
  grading.JUDGES): only a score of exactly 1.0 counts, and a checker that raises scores 0.
- Model text is never executed: the checkers that eval the answer (`EXECUTING_CHECKERS`) are
  never called. Where a plain comparison gives the same strict verdict they are replaced by it
  (`OWN_COMPARISON`), else the dataset is refused with the reason (`REFUSED`);
  tests/test_gym_any.py re-scans the installed reasoning-gym to keep these tables honest.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from veriscale.grading import BOX, CUE, EOS_MARK, JUDGES, MAX_NUMBER_CHARS, NUMBER, READERS, last_match, box_content

# Datasets whose reasoning-gym 0.1.25 `score_answer` executes the model's answer (found by reading
# their score_answer code paths; tests/test_gym_any.py re-scans the installed source). Not listed
# on purpose: bitwise_arithmetic and number_sorting eval() only reasoning-gym's own generated
# problem or gold text, never the answer.
EXECUTING_CHECKERS: dict[str, str] = {
    "binary_matrix": "its checker eval()s the answer to read a Python list of lists",
    "countdown": "its checker parses the answer with sympy's parse_expr, which evals it",
    "intermediate_integration": "its checker parses the answer with sympy's parse_expr, which evals it",
    "n_queens": "its checker eval()s the answer to read a Python list of rows",
    "polynomial_multiplication": "its checker parses the answer with sympy's parse_expr, which evals it",
    "puzzle24": "its checker parses the answer with sympy's parse_expr, which evals it",
    "simple_integration": "its checker parses the answer with sympy's parse_expr, which evals it",
    "spiral_matrix": "its checker eval()s the answer to read a Python list",
    "string_insertion": "its checker eval()s the answer to read a Python list of characters",
}
# Checkers that give 1.0 to wrong answers (found by scoring junk answers against them).
UNSOUND_CHECKERS: dict[str, str] = {
    "game_of_life_halting": "its checker compares bool() of the two strings, so any non-empty answer scores 1.0",
    "coin_flip": "its prefix partial credit scores '0' 1.0 against any probability below 1",
}
# Graded by our own comparison instead: numbers exactly, other answers as stripped text equal to
# the gold, or to any of the entry's metadata[KEY] when KEY is given. For the executing checkers
# listed here this is the same strict verdict: their only 1.0 path is that string comparison
# (the eval path gives partial credit, which is 0 here anyway).
OWN_COMPARISON: dict[str, str] = {"binary_matrix": "", "spiral_matrix": "", "string_insertion": "",
                                  "n_queens": "valid_answers", "game_of_life_halting": "", "coin_flip": ""}
# The rest accept many answers (any expression reaching a target, any antiderivative or
# equivalent polynomial): string comparison would mark right answers wrong, so they are refused.
REFUSED: dict[str, str] = {
    **{n: f"{r}, and a plain comparison with the gold would reject other correct answers"
       for n, r in EXECUTING_CHECKERS.items() if n not in OWN_COMPARISON},
    "composite": "it mixes other datasets and needs a list of them; name one dataset instead",
}
PROBE = 10  # entries (seed 0) whose gold answers decide whether a dataset is graded as numbers


def is_number(text: str) -> bool:
    """A gold answer the strict number grader can judge: one number ("-12", "1,000", "0.5").
    Stricter than grading's own parse, which drops spaces and would read "1 0 2" as 102."""
    return len(text) <= MAX_NUMBER_CHARS and NUMBER.fullmatch(text.strip()) is not None


@lru_cache(maxsize=None)
def numeric_answers(name: str) -> bool:
    """Whether the first PROBE gold answers (seed 0, default config) of dataset `name` are all numbers."""
    import reasoning_gym

    ds = reasoning_gym.create_dataset(name, size=PROBE, seed=0)
    return all(is_number(str(ds[i]["answer"])) for i in range(PROBE))


# ---- free-text answers ------------------------------------------------------------------------
def text_answer_span(text: str) -> tuple[int, int] | None:
    """Character span of a free-text final answer, or None: the content of the last \\boxed{...} if
    it comes after the last cue (as in `grading.answer_span`), else everything after the last cue
    up to the first EOS marker, whitespace stripped, so multi-line answers (grids, move lists)
    stay whole. Like a number span it counts only if something follows it: a trace cut at the
    budget right after "Final answer: abc" might have gone on to write "abcd"."""
    cue, box = last_match(CUE, text), last_match(BOX, text)
    if box is not None and (cue is None or box.start() >= cue.start()):
        return box_content(text, box.end())
    if cue is None:
        return None
    start = cue.end()
    mark = EOS_MARK.search(text, start)
    end = mark.start() if mark else len(text)
    answer = text[start:end]
    start, end = start + len(answer) - len(answer.lstrip()), start + len(answer.rstrip())
    return (start, end) if start < end < len(text) else None


CHECKER = "reasoning_gym"  # TextProblem.judge of a free-text problem (its form is "text")
_CHECKERS: dict[str, Any] = {}  # dataset name -> a dataset instance whose score_answer grades answers


def remember_checker(name: str, dataset: Any) -> None:
    """Use `dataset` (made with the default config) as `name`'s checker in this process."""
    _CHECKERS.setdefault(name, dataset)


def checker(name: str) -> Any:
    """The dataset (default config) whose `score_answer` grades `name`'s answers, made once per
    process. GymTask makes it before grading, so forked workers inherit it ready."""
    if name not in _CHECKERS:
        import reasoning_gym

        _CHECKERS[name] = reasoning_gym.create_dataset(name, size=1, seed=0)
    return _CHECKERS[name]


@dataclass
class CheckerGold:
    """What a free-text answer is judged against: the dataset and its entry (for its checker), or
    `accepted`, the stripped answers our own comparison accepts (None = use the checker)."""

    dataset: str
    entry: dict
    accepted: tuple[str, ...] | None = None


def judge_checker(pred: str, gold: Any) -> bool:
    """Runs in a grading worker: True when the dataset's checker scores `pred` exactly 1.0 (or our
    own comparison accepts it). Any exception raised by a checker on model text scores 0."""
    if not isinstance(gold, CheckerGold):  # a plain gold string (grading.first_success called directly)
        return pred.strip() == str(gold).strip()
    if gold.accepted is not None:
        return pred.strip() in gold.accepted
    try:
        return float(checker(gold.dataset).score_answer(pred, gold.entry)) == 1.0
    except Exception:
        return False


# The pool's workers look judges up by name in grading.JUDGES, and the grader reads a problem's
# answer with READERS[form]; registering these here keeps grading.py free of reasoning-gym. Forked
# workers inherit the entries; a spawned worker gets them when unpickling a CheckerGold or the
# reader imports this module.
JUDGES.setdefault(CHECKER, judge_checker)
READERS.setdefault("text", text_answer_span)
