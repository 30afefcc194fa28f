"""Strict 0/1 grading of free-text answers, the first-success index T it implies, and the
grader's verdict on every prefix of a trace (the verifier's labels).

A text task's prompt is a `TextProblem`: the message shown to the model, the gold answer, how the
final answer is written (`form`) and how it is compared (`judge`). Grading a trace:
1. `answer_span` finds the final answer the trace commits to, as a character span:
   - the content of the last `\\boxed{...}` if it comes after the last answer cue (or there is
     no cue); an unclosed box is no answer;
   - else the answer line after the last cue (`Final answer:`, `final answer is`, `####`):
     everything up to the first newline, EOS marker (`<|im_end|>`, `<eos>`, ...) or sentence end
     (a period before white space or an EOS marker), with surrounding white space and the
     wrappers `*` and `$` removed. An answer line that runs to the end of the text is no answer:
     a trace cut at the budget right after "Final answer: 1" (or "1.") might have gone on to "12"
     (or "1.5");
   - else (form "number", `fallback_last_number`, off by default) the last number in the text,
     if at least one character follows it.
   A trace without the cue and without a box has no answer: rambling that a budget cut happens to
   end on the right number earns nothing.
2. The span is compared with the gold answer by a judge: `exact` credits only a span that is a
   number in canonical form, an optional minus sign ("-" or "−"), ASCII digits and an optional
   decimal part (`CANONICAL`, at most `MAX_NUMBER_CHARS` characters, checked before parsing),
   equal in value to the gold: for gold 18, "18", "18.0" and "-0" for 0 are credited, and
   "18/7", "18e5", "18^2", "18 + 1", "1,8", "+18" or Arabic-Indic digits are not (a thousands
   separator is not canonical either: "1,000" is not 1000); `math_verify` is math-verify
   equivalence of the two as LaTeX (its plain-expression parser is not used, because sympy's
   `parse_expr` evals).
3. T = the 1-based index of the generated token whose end offset first reaches the span's end:
   the token that completes the final answer. Earlier mentions of the gold number never count.

`answer_keys` turns the same final-answer span into an integer key for majority voting: a hash
of the exact value for a canonical number ("7" and "7.0" vote together), else of the stripped
span text; a trace without a span abstains. Keys never consult the judge.

`prefix_verdicts` is the grader's verdict on every prefix h of a trace: what `first_success`
says of the trace cut to h tokens. A later answer overrides an earlier one, so a prefix can be
right and a longer one wrong: unlike the planted task's checker, the verdict need not stay 1.

Model text is never executed, and the main process never reads it beyond its length: answer
extraction and judging both run in a pool of worker processes with one wall-clock limit per trace
(`GradingPool`): a worker that overruns (a huge power such as 9^{9^{9^9}}, deeply nested LaTeX,
an enormous unclosed box) is killed and replaced, and the trace scores 0 and abstains. A text
longer than `max_text_chars` is not sent at all. Workers are forked where the platform allows,
after importing math-verify in the parent, so a replacement starts in milliseconds.
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
from functools import partial
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Literal, Sequence

import torch

from veriscale.config import knob
from veriscale.tasks.base import NEVER, Rollouts

CUE = re.compile(r"final\s+answer(?:\s+is)?\s*[:：]?|####", re.IGNORECASE)
BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
BRACE = re.compile(r"[{}]")
# The EOS string a sampler keeps at the end of a text (<|im_end|>, <|eot_id|>, </s>, <eos>, ...).
EOS_MARK = re.compile(r"<\|[^<>|\s]{1,40}\|>|<｜[^<>｜]{1,40}｜>|</s>|<eos>|<end_of_turn>")
# Where an answer line ends: a newline or an EOS marker (after an optional period), or a period
# before white space (a sentence end; "7.5" is one number).
ANSWER_END = re.compile(rf"\.?(?:\n|{EOS_MARK.pattern})|\.\s")
WRAP = re.compile(r"[\s*$]*")  # white space and markdown/LaTeX wrappers around an answer line
# A number as gold answers and the last-number fallback write it (thousands separators allowed).
NUMBER = re.compile(r"[-−]?[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?")
# A final answer the exact judge credits: sign, ASCII digits, optional decimal part.
CANONICAL = re.compile(r"[-−]?[0-9]+(?:\.[0-9]+)?")
MAX_NUMBER_CHARS = 64  # longer "numbers" are not answers; this also bounds Fraction's work


@dataclass(frozen=True)
class TextProblem:
    """One text prompt: what the model sees and what its answer is graded against."""

    text: str  # the user message, including the answer-format instruction
    gold: str  # the gold final answer ("42", "\\frac{1}{2}")
    form: Literal["number", "boxed"] = "number"  # how the final answer is written
    judge: Literal["exact", "math_verify"] = "exact"  # how it is compared with gold
    group: str = ""  # provenance (a template id, a file and line), for reports
    solution: str = ""  # a gold worked solution ending in the final answer ("" = none): the VF expert trace


# ---- extraction (runs inside worker processes) -------------------------------------------------
def last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    """The last match of `pattern` in `text`, or None."""
    last = None
    for last in pattern.finditer(text):  # noqa: B007  (constant memory, unlike a list of matches)
        pass
    return last


def box_content(text: str, open_end: int) -> tuple[int, int] | None:
    """Span inside a box whose `{` ends at open_end; None when the braces never close."""
    depth = 1
    for m in BRACE.finditer(text, open_end):
        depth += 1 if m.group() == "{" else -1
        if depth == 0:
            return open_end, m.start()
    return None


def answer_line(text: str, start: int) -> tuple[int, int] | None:
    """Span of the answer line that begins at `start` (see the module docstring), or None when it
    is empty or runs to the end of the text."""
    a = WRAP.match(text, start).end()
    end = ANSWER_END.search(text, a)
    if end is None:
        return None
    b = end.start()
    while b > a and text[b - 1] in " \t*$":
        b -= 1
    return (a, b) if a < b else None


def answer_span(text: str, form: str = "number", fallback_last_number: bool = False) -> tuple[int, int] | None:
    """Character span [start, end) of the final answer in `text`, or None (see module docstring)."""
    cue, box = last_match(CUE, text), last_match(BOX, text)
    if box is not None and (cue is None or box.start() >= cue.start()):
        return box_content(text, box.end())
    if cue is not None:
        return answer_line(text, cue.end())
    if form == "number" and fallback_last_number:
        number = last_match(NUMBER, text)
        return (number.start(), number.end()) if number is not None and number.end() < len(text) else None
    return None


# ---- judges (run inside worker processes) ------------------------------------------------------
def number_value(s: str, pattern: re.Pattern = CANONICAL) -> Fraction | None:
    """The exact value of `s` if it is one number written as `pattern` allows (the length checked
    before any parsing), else None."""
    s = s.strip()
    if len(s) > MAX_NUMBER_CHARS or not pattern.fullmatch(s):
        return None
    return Fraction(s.replace(",", "").replace("−", "-"))


def judge_exact(pred: str, gold: str) -> bool:
    """A canonical number equal in value to the gold (gold may carry thousands separators)."""
    p, g = number_value(pred), number_value(gold, NUMBER)
    return p is not None and g is not None and p == g


def judge_math_verify(pred: str, gold: str) -> bool:
    from math_verify import LatexExtractionConfig, parse, verify

    cfg = [LatexExtractionConfig()]  # LaTeX only: the plain-expression parser evals its input
    g = parse(f"${gold}$", extraction_config=cfg, fallback_mode="no_fallback")
    p = parse(f"${pred}$", extraction_config=cfg, fallback_mode="no_fallback")
    return bool(g) and bool(p) and bool(verify(g, p))


JUDGES = {"exact": judge_exact, "math_verify": judge_math_verify}
# Final-answer readers of forms other than "number" and "boxed" (registered by the modules that
# define them: tasks/gym_checkers.py adds "text"); each maps a text to a span or None.
READERS: dict[str, Callable[[str], tuple[int, int] | None]] = {}


def run_judge(judge: str, pred: str, gold: Any) -> bool:
    """JUDGES[judge](pred, gold) as a bool; any failure to parse or compare is a wrong answer."""
    try:
        return bool(JUDGES[judge](pred, gold))
    except Exception:
        return False


def _read(text: str, read: Callable) -> tuple[int, int] | None:
    return read(text)


def final_verdict(text: str, read: Callable, judge: str, gold: Any) -> tuple[int | None, bool]:
    """(end of the final-answer span or None, whether the judge credits it)."""
    span = read(text)
    return (None, False) if span is None else (span[1], run_judge(judge, text[span[0]:span[1]], gold))


def prefix_verdicts_of(text: str, ends: list[int], read: Callable, judge: str, gold: Any) -> list[bool]:
    """The verdict on text[:e] for every e in `ends`; each distinct answer is judged once."""
    seen: dict[str, bool] = {}
    out = []
    for e in ends:
        prefix = text[:e]
        span = read(prefix)
        pred = None if span is None else prefix[span[0]:span[1]]
        if pred is not None and pred not in seen:
            seen[pred] = run_judge(judge, pred, gold)
        out.append(pred is not None and seen[pred])
    return out


def _serve(conn: Connection) -> None:
    """Worker loop: receive (function, args, default), send back function(*args), or the default
    when it raises; None stops the worker."""
    while (item := conn.recv()) is not None:
        fn, args, default = item
        try:
            out = fn(*args)
        except Exception:
            out = default
        conn.send(out)


class GradingPool:
    """Worker processes that run calls with a wall-clock limit per call.

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

    def map(self, fn: Callable, calls: Sequence[tuple], default: Any) -> list:
        """fn(*args) for each args in `calls` (fn a module-level function); a call that raises,
        overruns the timeout or kills its worker gives `default`."""
        results = [default] * len(calls)
        todo = deque(range(len(calls)))
        busy: dict[int, tuple[int, float]] = {}  # worker -> (call, deadline)
        while todo or busy:
            for w in range(self.n):
                if w not in busy and todo:
                    if self.procs[w] is None:
                        self._start(w)
                    i = todo.popleft()
                    self.procs[w][1].send((fn, calls[i], default))
                    busy[w] = (i, time.monotonic() + self.timeout)
            by_conn = {self.procs[w][1]: w for w in busy}
            left = min(d for _, d in busy.values()) - time.monotonic()
            for conn in wait(list(by_conn), timeout=max(0.0, left)):
                w = by_conn[conn]
                try:
                    results[busy[w][0]] = conn.recv()
                except EOFError:  # the worker died (e.g. out of memory): the default stands
                    self._kill(w)
                del busy[w]
            now = time.monotonic()
            for w in [w for w, (_, d) in busy.items() if d <= now]:
                self._kill(w)
                del busy[w]
        return results

    def grade(self, items: Sequence[tuple[str, str, Any]]) -> list[bool]:
        """One bool per (judge, pred, gold) item; an item that overruns or kills its worker is False."""
        if any(j == "math_verify" for j, _, _ in items):
            import math_verify  # noqa: F401  (imported before forking, so workers start warm)
        return self.map(run_judge, items, False)

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


def answer_key(span: str) -> int:
    """A stable 63-bit key of an answer span: of its exact value if it is a canonical number, else
    of its stripped text (the prefixes keep the number 1/2 apart from the text "1/2")."""
    value = number_value(span)
    canon = f"number:{value}" if value is not None else f"text:{span.strip()}"
    return int.from_bytes(hashlib.sha256(canon.encode()).digest()[:8], "big") >> 1


@dataclass
class GradingConfig:
    """The grading knobs every text task shares (GymConfig and FilesConfig extend it), and grading
    with them. Row i of the rollouts answers prompts[i]; `golds` (one per prompt) replaces the
    prompts' gold answers where a task judges against something else (a reasoning-gym entry)."""

    fallback_last_number: bool = knob(False, "without a 'Final answer:' cue or a box, grade the last number of "
                                             "the text (off: no cue, no credit)")
    grade_timeout: float = knob(5.0, "wall-clock seconds allowed to read and judge one trace (then it scores 0 "
                                     "and has no answer)", min=0.01)
    grade_workers: int = knob(2, "grading worker processes", min=1)
    max_text_chars: int = knob(1_000_000, "a trace text longer than this is not read at all (it scores 0 and has "
                                          "no answer): the size limit before any parsing", min=1)

    def _calls(self, fn: Callable, prompts: Sequence[TextProblem], rollouts: Rollouts, args: list[tuple],
               default: Any) -> list:
        """fn(text_i, *args[i]) for every rollout in the sandboxed pool; a text over max_text_chars
        gets the default unread."""
        if rollouts.texts is None or rollouts.offsets is None:
            raise ValueError("text grading needs rollouts with texts and offsets (use a text sampler)")
        out = [default] * len(rollouts)
        todo = [i for i, t in enumerate(rollouts.texts) if len(t) <= self.max_text_chars]
        if not todo:
            return out
        if any(prompts[i].judge == "math_verify" for i in todo):
            import math_verify  # noqa: F401  (imported before forking, so workers start warm)
        with GradingPool(self.grade_workers, self.grade_timeout) as pool:
            for i, r in zip(todo, pool.map(fn, [(rollouts.texts[i], *args[i]) for i in todo], default)):
                out[i] = r
        return out

    def _reader(self, p: TextProblem) -> Callable[[str], tuple[int, int] | None]:
        return READERS.get(p.form) or partial(answer_span, form=p.form, fallback_last_number=self.fallback_last_number)

    def _judged(self, prompts: Sequence[TextProblem], golds: Sequence[Any] | None) -> list[tuple]:
        golds = [p.gold for p in prompts] if golds is None else golds
        return [(self._reader(p), p.judge, g) for p, g in zip(prompts, golds)]

    def first_success(self, prompts: Sequence[TextProblem], rollouts: Rollouts,
                      golds: Sequence[Any] | None = None) -> torch.Tensor:
        """(B,) int64 T of each rollout, or NEVER (see the module docstring)."""
        verdicts = self._calls(final_verdict, prompts, rollouts, self._judged(prompts, golds), (None, False))
        T = torch.full((len(rollouts),), NEVER, dtype=torch.long)
        for i, (end, ok) in enumerate(verdicts):
            offsets = rollouts.offsets[i]
            j = bisect_left(offsets, end) if ok else len(offsets)  # the first token whose text reaches the end
            if j < len(offsets):
                T[i] = j + 1
        return T

    def answer_keys(self, prompts: Sequence[TextProblem], rollouts: Rollouts) -> tuple[torch.Tensor, torch.Tensor]:
        """answers (B, 1) int64 keys of each rollout's final answer span (`answer_key`) and valid
        (B,) bool, False when it has none (its answer is then 0). No judge is consulted."""
        spans = self._calls(_read, prompts, rollouts, [(self._reader(p),) for p in prompts], None)
        answers = torch.zeros(len(rollouts), 1, dtype=torch.long)
        for i, span in enumerate(spans):
            if span is not None:
                answers[i, 0] = answer_key(rollouts.texts[i][span[0]:span[1]])
        return answers, torch.tensor([s is not None for s in spans], dtype=torch.bool)

    def prefix_verdicts(self, prompts: Sequence[TextProblem], rollouts: Rollouts,
                        golds: Sequence[Any] | None = None) -> torch.Tensor:
        """(B, L) bool, for rollouts of width L: the verdict on every prefix h = 1..L, what
        `first_success` says of the rollouts truncated to h tokens (`Rollouts.truncate`), so past
        a trace's end that of the whole trace. A trace that overruns the time limit is 0 throughout."""
        L = rollouts.tokens.shape[1]
        ends = [[o[h - 1] if len(o) > h else len(t) for h in range(1, min(L, len(o)) + 1)]
                for t, o in zip(rollouts.texts or [], rollouts.offsets or [])]  # character end of each prefix
        args = [(e, *j) for e, j in zip(ends, self._judged(prompts, golds))]
        verdicts = self._calls(prefix_verdicts_of, prompts, rollouts, args, None)
        out = torch.zeros(len(rollouts), L, dtype=torch.bool)
        for i, v in enumerate(verdicts):
            if v:
                out[i, :len(v)] = torch.tensor(v)
                out[i, len(v):] = v[-1]
        return out
