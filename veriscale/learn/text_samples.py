"""Checked samples of the base policy on the training prompts: the data both VB learners and the
VF search traces are built from (SPEC Algorithm 1, steps 1-2, on text).

`draw_samples` samples r traces of at most H tokens for each of the n training prompts and
labels each with the task's checker (first-success index T, or null when never correct). The
rows are stored as JSONL, one sample per line, written atomically; `read_samples` names the
file and line of a malformed row.

Used by `text_verifier.py` (every prefix of every sample labelled 1{h >= T}) and by
`text_sft.py` (search traces: failed attempts followed by a successful one).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from veriscale.config import knob
from veriscale.learn.text_lm import RUN_FILE
from veriscale.policy.checkpoint import write_json_atomic
from veriscale.tasks.base import NEVER, Task

FILE = "samples.jsonl"
FIELDS = {"prompt": int, "sample": int, "ids": list, "text": str, "T": (int, type(None))}


@dataclass
class SamplesConfig:
    r: int = knob(4, "samples of the base policy per training prompt (ours)", min=1)
    temperature: float = knob(1.0, "sampling temperature", min=0.0)


class SamplesFileError(ValueError):
    """A samples file row is malformed."""


def draw_samples(sampler, task: Task, prompts: Sequence[Any], r: int, H: int, *, temperature: float = 1.0,
                 seed: int = 0) -> list[dict]:
    """r checked samples of at most H tokens per prompt; row (i, j) is sample j of prompt i."""
    rep = [p for p in prompts for _ in range(r)]
    ro = sampler.sample(rep, H, temperature=temperature, seed=seed)
    T = task.check(rep, ro)
    return [{"prompt": k // r, "sample": k % r, "ids": ro.tokens[k, :ro.counts[k]].tolist(),
             "text": ro.texts[k], "T": int(T[k]) if T[k] < NEVER else None} for k in range(len(rep))]


def write_samples(directory: str | Path, rows: list[dict], meta: dict) -> Path:
    """Write rows to `directory/samples.jsonl` atomically (temporary file, then rename), and
    `meta` (it must name the prompts: n and data_seed) to `directory/veriscale.json`."""
    for key in ("n", "data_seed"):
        if key not in meta:
            raise ValueError(f"samples metadata must include {key!r}")
    path = Path(directory) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path.parent / RUN_FILE, {**meta, "stage": "samples"})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{FILE}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return path


def read_samples(directory: str | Path) -> list[dict]:
    """The rows of `directory/samples.jsonl`; a malformed row raises SamplesFileError naming file:line."""
    path = Path(directory) / FILE
    rows = []
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SamplesFileError(f"{where}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise SamplesFileError(f"{where}: expected an object")
            for key, kind in FIELDS.items():
                if key not in row or not isinstance(row[key], kind) or isinstance(row[key], bool):
                    raise SamplesFileError(f"{where}: field {key!r} missing or of the wrong type")
            if not all(isinstance(t, int) for t in row["ids"]):
                raise SamplesFileError(f"{where}: field 'ids' must be a list of token ids")
            rows.append(row)
    return rows
