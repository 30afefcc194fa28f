"""Strict 0/1 grading of free-text answers, and the first-success index T it implies.

A text task's prompt is a `TextProblem`: the message shown to the model, the gold answer, how the
final answer is written (`form`) and how it is compared (`judge`). Grading a trace:
1. `answer_span` finds the final answer the trace commits to, as a character span:
   - the content of the last `\\boxed{...}` if it comes after the last answer cue (or there is
     no cue); an unclosed box is no answer;
   - else the first number after the last cue (`Final answer:`, `final answer is`, `####`);
   - else (form "number", `fallback_last_number`) the last number in the text.
   A number span counts only if at least one character follows it: a trace cut at the budget
   right after "Final answer: 1" might have gone on to write "12". Samplers keep the EOS marker
   in their texts, so a finished answer is always followed by something.
2. The span is compared with the gold answer by a judge: `exact` (equal as rational numbers:
   "1,000" = "1000.0"; anything else scores 0) or `math_verify` (math-verify equivalence of the
   two as LaTeX; its plain-expression parser is not used, because sympy's `parse_expr` evals).
3. T = the 1-based index of the generated token whose end offset first reaches the span's end:
   the token that completes the final answer. Earlier mentions of the gold number never count.

`answer_keys` turns the same final-answer span into an integer key for majority voting: a hash
of the exact rational value for a number ("7" and "7.0" vote together, as do "1,000" and "1000"),
else of the stripped span text; a trace without a span abstains.

Model text is never executed. Judges run in a pool of worker processes with a wall-clock limit
per item: a worker that overruns (a huge power such as 9^{9^{9^9}}, deeply nested LaTeX) is
killed and replaced, and the item scores 0. Workers are forked where the platform allows, after
importing math-verify in the parent, so a replacement starts in milliseconds.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import re
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection, wait
from typing import Literal, Sequence

import torch

from veriscale.config import knob
from veriscale.tasks.base import NEVER, Rollouts

CUE = re.compile(r"final\s+answer(?:\s+is)?\s*[:：]?|####", re.IGNORECASE)
NUMBER = re.compile(r"[-−]?\d+(?:,\d{3})*(?:\.\d+)?")
BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
MAX_EXACT_CHARS = 64  # longer "numbers" are not answers; this also bounds Fraction's work


@dataclass(frozen=True)
class TextProblem:
    """One text prompt: what the model sees and what its answer is graded against."""

    text: str  # the user message, including the answer-format instruction
    gold: str  # the gold final answer ("42", "\\frac{1}{2}")
    form: Literal["number", "boxed"] = "number"  # how the final answer is written
    judge: Literal["exact", "math_verify"] = "exact"  # how it is compared with gold
    group: str = ""  # provenance (a template id, a file and line), for reports
    solution: str = ""  # a gold worked solution ending in the final answer ("" = none): the VF expert trace


def _number_after(text: str, start: int) -> tuple[int, int] | None:
    m = NUMBER.search(text, start)
    return (m.start(), m.end()) if m else None


def box_content(text: str, open_end: int) -> tuple[int, int] | None:
    """Span inside a box whose `{` ends at open_end; None when the braces never close."""
    depth = 1
    for i in range(open_end, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return open_end, i
    return None


def answer_span(text: str, form: str = "number", fallback_last_number: bool = True) -> tuple[int, int] | None:
    """Character span [start, end) of the final answer in `text`, or None (see module docstring)."""
    cues = list(CUE.finditer(text))
    boxes = list(BOX.finditer(text))
    cue_end = cues[-1].end() if cues else None
    if boxes and (cue_end is None or boxes[-1].start() >= cues[-1].start()):
        return box_content(text, boxes[-1].end())
    if cue_end is not None:
        span = _number_after(text, cue_end)
    elif form == "number" and fallback_last_number:
        numbers = list(NUMBER.finditer(text))
        span = (numbers[-1].start(), numbers[-1].end()) if numbers else None
    else:
        span = None
    return span if span is not None and span[1] < len(text) else None


# ---- judges (run inside worker processes) ------------------------------------------------------
def _as_fraction(s: str) -> Fraction | None:
    s = s.strip().strip("$").replace(",", "").replace("−", "-").replace(" ", "")
    if len(s) > MAX_EXACT_CHARS or not NUMBER.fullmatch(s):
        return None
    return Fraction(s)


def judge_exact(pred: str, gold: str) -> bool:
    p, g = _as_fraction(pred), _as_fraction(gold)
    return p is not None and g is not None and p == g


def judge_math_verify(pred: str, gold: str) -> bool:
    from math_verify import LatexExtractionConfig, parse, verify

    cfg = [LatexExtractionConfig()]  # LaTeX only: the plain-expression parser evals its input
    g = parse(f"${gold}$", extraction_config=cfg, fallback_mode="no_fallback")
    p = parse(f"${pred}$", extraction_config=cfg, fallback_mode="no_fallback")
    return bool(g) and bool(p) and bool(verify(g, p))


JUDGES = {"exact": judge_exact, "math_verify": judge_math_verify}


def _serve(conn: Connection) -> None:
    """Worker loop: receive (judge, pred, gold), send back a bool; None stops the worker."""
    while (item := conn.recv()) is not None:
        judge, pred, gold = item
        try:
            ok = bool(JUDGES[judge](pred, gold))
        except Exception:  # any failure to parse or compare is a wrong answer
            ok = False
        conn.send(ok)


class GradingPool:
    """Worker processes that judge (judge, pred, gold) items with a wall-clock limit per item.

    Use as a context manager: `with GradingPool(workers=2, timeout=5.0) as pool: pool.grade(items)`.
    """

    def __init__(self, workers: int = 2, timeout: float = 5.0):
        if workers < 1 or timeout <= 0:
            raise ValueError("GradingPool needs workers >= 1 and timeout > 0")
        self.n, self.timeout = workers, timeout
        self.ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.procs: list[tuple[mp.Process, Connection] | None] = [None] * workers

    def _start(self, w: int) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_serve, args=(child,), daemon=True)
        proc.start()
        child.close()
        self.procs[w] = (proc, parent)

    def _kill(self, w: int) -> None:
        proc, conn = self.procs[w]
        proc.kill()
        proc.join()
        conn.close()
        self.procs[w] = None

    def grade(self, items: Sequence[tuple[str, str, str]]) -> list[bool]:
        """One bool per item; an item whose worker overruns the timeout or dies is False."""
        if any(j == "math_verify" for j, _, _ in items):
            import math_verify  # noqa: F401  (imported before forking, so workers start warm)
        results = [False] * len(items)
        todo = deque(range(len(items)))
        busy: dict[int, tuple[int, float]] = {}  # worker -> (item, deadline)
        while todo or busy:
            for w in range(self.n):
                if w not in busy and todo:
                    if self.procs[w] is None:
                        self._start(w)
                    i = todo.popleft()
                    self.procs[w][1].send(items[i])
                    busy[w] = (i, time.monotonic() + self.timeout)
            by_conn = {self.procs[w][1]: w for w in busy}
            left = min(d for _, d in busy.values()) - time.monotonic()
            for conn in wait(list(by_conn), timeout=max(0.0, left)):
                w = by_conn[conn]
                try:
                    results[busy[w][0]] = conn.recv()
                except EOFError:  # the worker died (e.g. out of memory): the item scores 0
                    self._kill(w)
                del busy[w]
            now = time.monotonic()
            for w in [w for w, (_, d) in busy.items() if d <= now]:
                self._kill(w)
                del busy[w]
        return results

    def close(self) -> None:
        for w, slot in enumerate(self.procs):
            if slot is not None:
                try:
                    slot[1].send(None)
                except (BrokenPipeError, OSError):
                    pass
                self._kill(w)

    def __enter__(self) -> "GradingPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _need_texts(rollouts: Rollouts) -> None:
    if rollouts.texts is None or rollouts.offsets is None:
        raise ValueError("text grading needs rollouts with texts and offsets (use a text sampler)")


def answer_key(span: str) -> int:
    """A stable 63-bit key of an answer span: of its exact value if it is a number, else of its
    stripped text (the prefixes keep the number 1/2 apart from the text "1/2")."""
    value = _as_fraction(span)
    canon = f"number:{value}" if value is not None else f"text:{span.strip()}"
    return int.from_bytes(hashlib.sha256(canon.encode()).digest()[:8], "big") >> 1


def answer_keys(problems: Sequence[TextProblem], rollouts: Rollouts, *,
                fallback_last_number: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """answers (B, 1) int64 keys of each rollout's final answer span and valid (B,) bool (False
    when `answer_span` finds none; its answer is then 0). Row i answers problems[i]."""
    _need_texts(rollouts)
    answers = torch.zeros(len(rollouts), 1, dtype=torch.long)
    valid = torch.zeros(len(rollouts), dtype=torch.bool)
    for i, (p, text) in enumerate(zip(problems, rollouts.texts)):
        span = answer_span(text, p.form, fallback_last_number)
        if span is not None:
            answers[i, 0], valid[i] = answer_key(text[span[0]:span[1]]), True
    return answers, valid


def first_success(problems: Sequence[TextProblem], rollouts: Rollouts, *, timeout: float = 5.0, workers: int = 2,
                  fallback_last_number: bool = True) -> torch.Tensor:
    """(B,) int64 T of each rollout against its problem (row i answers problems[i]), or NEVER."""
    _need_texts(rollouts)
    T = torch.full((len(rollouts),), NEVER, dtype=torch.long)
    rows, items = [], []
    for i, (p, text) in enumerate(zip(problems, rollouts.texts)):
        span = answer_span(text, p.form, fallback_last_number)
        if span is not None:
            rows.append((i, span[1]))
            items.append((p.judge, text[span[0]:span[1]], p.gold))
    with GradingPool(workers, timeout) as pool:
        ok = pool.grade(items)
    for (i, end), good in zip(rows, ok):
        j = bisect_left(rollouts.offsets[i], end)  # first token whose text reaches the span's end
        if good and j < len(rollouts.offsets[i]):
            T[i] = j + 1
    return T


@dataclass
class GradingConfig:
    """The grading knobs every text task shares (GymConfig and FilesConfig extend it)."""

    fallback_last_number: bool = knob(True, "without a 'Final answer:' cue, grade the last number of the text")
    grade_timeout: float = knob(5.0, "wall-clock seconds allowed to grade one answer (then it scores 0)", min=0.01)
    grade_workers: int = knob(2, "grading worker processes", min=1)

    def first_success(self, prompts: Sequence[TextProblem], rollouts: Rollouts) -> torch.Tensor:
        """(B,) T of each rollout, graded in the sandboxed pool with these knobs."""
        return first_success(prompts, rollouts, timeout=self.grade_timeout, workers=self.grade_workers,
                             fallback_last_number=self.fallback_last_number)

    def answer_keys(self, prompts: Sequence[TextProblem], rollouts: Rollouts) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1) answer keys and (B,) valid of each rollout, with these knobs (see `answer_keys`)."""
        return answer_keys(prompts, rollouts, fallback_last_number=self.fallback_last_number)
