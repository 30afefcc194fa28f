"""Checked samples of the base policy: the labelled data of the verifier (SPEC Algorithm 1, steps
1-2) and of search-trace SFT.

`draw(policy, task, cfg, n, H, data_seed, seed)` samples r traces of at most H tokens on each of
the n training prompts (seed `seed`) and on `val_prompts` other training prompts (seed `seed +
1`, used only to choose when to stop), and labels each trace with the task's checker: its
first-success index T, or NEVER. The same function serves a learner that draws its own data and
the study job whose samples two learners share.

On disk (a study artifact): `samples.jsonl`, one sample per line ({split, prompt, sample, ids,
T}; T null when never correct), written atomically, and veriscale.json (stage "samples", n,
data_seed, width, r). `read` names the file and line of a malformed row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from veriscale.atomic import write_json_atomic, write_jsonl_atomic
from veriscale.config import knob
from veriscale.tasks.base import NEVER, Rollouts, Task, repeat_each

FILE = "samples.jsonl"
META = "veriscale.json"
FIELDS = {"split": str, "prompt": int, "sample": int, "ids": list, "T": (int, type(None))}


@dataclass
class SamplesConfig:
    r: int = knob(1, "samples of the base policy per prompt (1: n labelled traces, data-matched with SFT's n; "
                     "ours)", min=1)
    temperature: float = knob(1.0, "sampling temperature", min=0.0)
    val_prompts: int = knob(256, "other training prompts (x r samples), only to choose when to stop (ours)", min=1)


@dataclass
class Samples:
    """Checked samples: rollouts and their T on the training prompts (row i*r+j is sample j of
    prompt i) and on the validation prompts."""

    prompts: Any
    rollouts: Rollouts
    T: torch.Tensor
    val_prompts: Any
    val_rollouts: Rollouts
    val_T: torch.Tensor
    r: int

    def repeated(self, which: str) -> Any:
        """The prompt of every row of split `which` ("train" or "val")."""
        return repeat_each(self.prompts if which == "train" else self.val_prompts, self.r)


class SamplesFileError(ValueError):
    """A samples file row is malformed."""


def horizon_of(policy) -> int:
    """The horizon a policy carries (the tiny GPT's task horizon); text policies have none (ValueError)."""
    if policy.horizon is None:
        raise ValueError("horizon: a text policy has no task horizon; set horizon (the H of the rollouts)")
    return policy.horizon


def check(policy, task: Task, prompts: Any, r: int, H: int, temperature: float,
          seed: int) -> tuple[Rollouts, torch.Tensor]:
    """r sampled traces of at most H tokens per prompt, and their (B*r,) first-success T."""
    rep = repeat_each(prompts, r)
    ro = policy.sample(rep, H, temperature=temperature, seed=seed)
    return ro, task.check(rep, ro)


def draw(policy, task: Task, cfg: SamplesConfig, n: int, H: int, data_seed: int, seed: int) -> Samples:
    """Samples on the n training prompts of `data_seed` and on validation prompts of other
    training prompts (disjoint from the n, so validation prefixes are unseen)."""
    prompts = task.prompts("train", n, data_seed)
    val_prompts = task.validation_prompts(prompts, cfg.val_prompts, data_seed + 7919)
    ro, T = check(policy, task, prompts, cfg.r, H, cfg.temperature, seed)
    val_ro, val_T = check(policy, task, val_prompts, cfg.r, H, cfg.temperature, seed + 1)
    return Samples(prompts, ro, T, val_prompts, val_ro, val_T, cfg.r)


def write(directory: str | Path, samples: Samples, meta: dict) -> Path:
    """samples.jsonl and veriscale.json (meta must name n, data_seed and val_prompts)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, ro, T in (("train", samples.rollouts, samples.T), ("val", samples.val_rollouts, samples.val_T)):
        for k in range(len(ro)):
            rows.append({"split": split, "prompt": k // samples.r, "sample": k % samples.r,
                         "ids": ro.tokens[k, :ro.counts[k]].tolist(), "T": int(T[k]) if T[k] < NEVER else None})
    write_jsonl_atomic(directory / FILE, rows)
    write_json_atomic(directory / META, {**meta, "stage": "samples", "r": samples.r,
                                         "width": samples.rollouts.tokens.shape[1]})
    return directory / FILE


def _rows(path: Path) -> list[dict]:
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
            if row["split"] not in ("train", "val") or not all(isinstance(t, int) for t in row["ids"]):
                raise SamplesFileError(f"{where}: field 'split' must be train or val and 'ids' token ids")
            rows.append(row)
    return rows


def read(directory: str | Path, task: Task, policy) -> Samples:
    """The samples written by `write`, as the policy's rollouts (with texts for a text policy);
    the prompts are drawn again from the task."""
    directory = Path(directory)
    meta = json.loads((directory / META).read_text())
    rows = _rows(directory / FILE)
    prompts = task.prompts("train", meta["n"], meta["data_seed"])
    val_prompts = task.validation_prompts(prompts, meta["val_prompts"], meta["data_seed"] + 7919)
    parts = []
    for split, count in (("train", len(prompts)), ("val", len(val_prompts))):
        mine = sorted((r for r in rows if r["split"] == split), key=lambda r: (r["prompt"], r["sample"]))
        want = [(i, j) for i in range(count) for j in range(meta["r"])]
        if [(r["prompt"], r["sample"]) for r in mine] != want:  # row i*r+j must be sample j of prompt i
            raise SamplesFileError(f"{directory / FILE}: split {split!r} must hold samples 0..{meta['r'] - 1} of "
                                   f"prompts 0..{count - 1} exactly once each")
        parts += [policy.rollouts([r["ids"] for r in mine], meta["width"]),
                  torch.tensor([NEVER if r["T"] is None else r["T"] for r in mine], dtype=torch.long)]
    return Samples(prompts, parts[0], parts[1], val_prompts, parts[2], parts[3], meta["r"])
