"""User-supplied problems from a JSONL or Parquet file, in GSM8K or MATH format, as a text task.

Each row is one problem, in either format (detected per row):
- GSM8K: {"question": ..., "answer": "... #### 42"}; the gold answer is the number after "####";
  the model is asked to end with "Final answer: N".
- MATH:  {"problem": ..., "solution": "... \\boxed{\\frac{1}{2}}"}; the gold answer is the content
  of the solution's last \\boxed{}; the model is asked to box its final answer.
Extra fields are ignored. Both are graded 0/1 in the sandboxed pool (`grading.py`): a GSM8K
answer must be the gold number in canonical form (the `exact` judge), a MATH answer is compared
with math-verify. A malformed row stops loading with an error naming the file and the line (JSONL)
or row (Parquet), 1-based.

Splits: `test_share` of the rows (by a stable hash of the prompt text) form "test"; the default 1.0
treats the whole file as a test set. Use: `veriscale diagnose --task file:data/my_gsm8k.jsonl ...`.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from veriscale.config import knob
from veriscale.grading import BOX, GradingConfig, TextProblem, box_content
from veriscale.tasks.base import Rollouts, gold_traces, other_prompts
from veriscale.tasks.gym import Reserve, hash_split

INSTRUCTIONS = {
    "number": 'Solve it step by step, then write "Final answer:" and the number.',
    "boxed": "Solve it step by step, then write the final answer in \\boxed{}.",
}
GSM8K_GOLD = re.compile(r"####\s*([-−]?[\d,]*\.?\d+)\s*$")


class DataFileError(ValueError):
    """A data file is missing, unreadable, or has a malformed row; the message names file and line."""


@dataclass
class FilesConfig(Reserve, GradingConfig):
    path: str = knob("", "JSONL or Parquet file of GSM8K- or MATH-format rows")
    instruction: str = knob("auto", "answer-format instruction appended to each question ('auto' = ask for "
                                    "'Final answer: N' on GSM8K rows and a \\boxed{} answer on MATH rows)")
    test_share: float = knob(1.0, "share of rows (stable hash of the prompt) in 'test'; 1.0 = all",
                             min=0.0, max=1.0)
    split_seed: int = knob(0, "seed of the train/test split", min=0)


def parse_row(row: object, where: str, instruction: str) -> TextProblem:
    """One GSM8K or MATH row -> TextProblem; `where` ("file:line") prefixes every error."""
    if not isinstance(row, dict):
        raise DataFileError(f"{where}: expected an object with GSM8K or MATH fields, got {type(row).__name__}")
    if isinstance(row.get("question"), str) and isinstance(row.get("answer"), str):
        m = GSM8K_GOLD.search(row["answer"].strip())
        if not m:
            raise DataFileError(f"{where}: GSM8K 'answer' must end with '#### N' (a number)")
        gold, form, text = m.group(1).replace(",", "").replace("−", "-"), "number", row["question"]
        solution = row["answer"].strip()  # GSM8K's worked solution; its "#### N" is an answer cue
    elif isinstance(row.get("problem"), str) and isinstance(row.get("solution"), str):
        boxes = list(BOX.finditer(row["solution"]))
        span = box_content(row["solution"], boxes[-1].end()) if boxes else None
        if span is None or not row["solution"][span[0]:span[1]].strip():
            raise DataFileError(f"{where}: MATH 'solution' has no complete \\boxed{{...}} answer")
        gold, form, text = row["solution"][span[0]:span[1]].strip(), "boxed", row["problem"]
        solution = row["solution"].strip()
    else:
        keys = sorted(row) if all(isinstance(k, str) for k in row) else list(row)
        raise DataFileError(f"{where}: expected string fields question+answer (GSM8K) or problem+solution "
                            f"(MATH), got keys {keys}")
    cue = INSTRUCTIONS[form] if instruction == "auto" else instruction
    return TextProblem(text=f"{text.strip()} {cue}", gold=gold, form=form,
                       judge="exact" if form == "number" else "math_verify", group=where, solution=solution)


def read_problems(path: str | Path, instruction: str = "auto") -> list[TextProblem]:
    """All rows of a .jsonl/.json-lines or .parquet file as TextProblems, validated."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: file not found")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise DataFileError(f"{path}: not a readable Parquet file ({e})") from None
        out = [parse_row(r, f"{path}:row {i}", instruction) for i, r in enumerate(rows, 1)]
    else:
        out = [parse_row(row, f"{path}:{i}", instruction) for i, row in _json_lines(path)]
    if not out:
        raise DataFileError(f"{path}: no rows")
    return out


def _json_lines(path: Path):
    """(1-based line number, parsed JSON) of every non-blank line; each line is decoded on its
    own, so a binary or mis-encoded file is refused naming the line, not a buffer offset."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataFileError(f"{path}: unreadable ({e.strerror})") from None
    for i, line in enumerate(raw.splitlines(), 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataFileError(f"{path}:{i}: not UTF-8 text (byte {e.start + 1} of the line); expected JSON "
                                "lines or a .parquet file") from None
        if not text.strip():
            continue
        try:
            yield i, json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFileError(f"{path}:{i}: not valid JSON ({e.msg})") from None


class FileTask:
    """Problems from a user file behind the Task protocol; prompts are `TextProblem`s."""

    def __init__(self, cfg: FilesConfig):
        self.cfg = cfg
        self.name = f"file:{cfg.path}"
        self.source = f"user file {cfg.path} (licence: as supplied by the user)"
        self.problems = read_problems(cfg.path, cfg.instruction)

    def prompts(self, split: str, n: int, seed: int) -> list[TextProblem]:
        """n distinct problems of `split`, a seeded random choice."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        pool = [p for p in self.problems
                if hash_split(p.text, self.cfg.test_share, self.cfg.split_seed, self.cfg.reserve_share) == self.cfg.part(split)]
        if n > len(pool):
            raise ValueError(f"{self.cfg.path}: asked for {n} {split} problems but the file has {len(pool)} "
                             f"(files.test_share={self.cfg.test_share})")
        return random.Random(seed).sample(pool, n)

    def validation_prompts(self, exclude: list[TextProblem], n: int, seed: int) -> list[TextProblem]:
        """n training problems not among `exclude` (a learner's validation set)."""
        return other_prompts(self, exclude, n, seed)

    def expert_traces(self, prompts: list[TextProblem], seed: int, homogeneous: bool = False) -> list[str | None]:
        """The file's gold solutions (its `solution` column), None where a row has none."""
        return gold_traces(prompts, homogeneous)

    def check(self, prompts: list[TextProblem], rollouts: Rollouts) -> torch.Tensor:
        """Task protocol: (B,) T of each rollout (see grading.py)."""
        return self.cfg.first_success(prompts, rollouts)

    def prefix_verdicts(self, prompts: list[TextProblem], rollouts: Rollouts) -> torch.Tensor:
        """Task protocol: (B, L) the grader's verdict on every prefix of every rollout."""
        return self.cfg.prefix_verdicts(prompts, rollouts)

    def answer_keys(self, prompts: list[TextProblem], rollouts: Rollouts) -> tuple[torch.Tensor, torch.Tensor]:
        """Task protocol: (B, 1) keys of each rollout's final answer, and (B,) valid (see grading.py)."""
        return self.cfg.answer_keys(prompts, rollouts)
