"""The world of a study's jobs: the task with its configuration and the base policy, typed.

Every job of one grid point (heterogeneity level or text task, and H in horizon mode) reads the
same world. It is part of each job's identity (`as_dict`, hashed into the job id), and it builds
what jobs run on: the task (`task`) and the base policy (`base_policy`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from veriscale.config import to_dict
from veriscale.policy.base import PolicyError, sha256_file
from veriscale.policy.load import load_policy
from veriscale.policy.smollm2 import ensure_converted
from veriscale.policy.text import HFConfig, hf_identity
from veriscale.tasks.base import Task
from veriscale.tasks.files import FilesConfig
from veriscale.tasks.gym import GymConfig
from veriscale.tasks.load import is_text, make_task
from veriscale.tasks.planted import PlantedConfig

# An artifact's directory from its job id (the sweep's study directory layout).
Dep = Callable[[str], Path]


def base_spec_path(spec: str) -> Path:
    """The weights file of a policy spec (a run directory, hf:PATH, smollm2), for its digest."""
    root = ensure_converted() if spec == "smollm2" else Path(spec[3:] if spec.startswith("hf:") else spec)
    return root / "model.safetensors"


def spec_digest(spec: str) -> str | None:
    """The digest of a policy spec's weights (None when they are not one safetensors file)."""
    path = base_spec_path(spec)
    return sha256_file(path) if path.is_file() else None


@dataclass(frozen=True)
class World:
    """task: "planted", gym:NAME or file:PATH, with its configuration `task_cfg`. The base policy
    is the artifact `base` (the planted task's pretraining, a text study's shaped base of one
    heterogeneity level) or the policy spec `base_spec` whose weights had digest `base_sha256` when
    the study was expanded (text tasks, sampled and loaded with `hf`; a shaped base starts from it)."""

    task: str
    task_cfg: PlantedConfig | GymConfig | FilesConfig
    base: str | None = None
    base_spec: str | None = None
    base_sha256: str | None = None
    hf: HFConfig | None = None

    @property
    def text(self) -> bool:
        return is_text(self.task)

    def as_dict(self) -> dict[str, Any]:
        """The world's part of every job config (the job id hashes it)."""
        out = {"task": self.task, "task_cfg": to_dict(self.task_cfg), "base": self.base}
        if self.text:
            out.update(base_spec=self.base_spec, base_sha256=self.base_sha256, hf=hf_identity(self.hf))
        return out

    def make_task(self) -> Task:
        if self.task == "planted":
            return make_task(self.task, planted=self.task_cfg)
        if self.task.startswith("gym:"):
            return make_task(self.task, gym=self.task_cfg)
        return make_task(self.task, files=self.task_cfg)

    @property
    def hf_quiet(self) -> HFConfig:
        """The transformers settings with loading bars off (a sweep shows one bar across jobs)."""
        return replace(self.hf or HFConfig(), progress=False)

    def base_policy(self, dep: Dep, sampler: str = "hf"):
        """The base policy: its artifact (the planted task's pretraining, a text study's shaped
        base), or the spec, whose weights must still be the ones the study was expanded with."""
        if self.base:
            return load_policy(dep(self.base), hf=self.hf_quiet, sampler=sampler) if self.text \
                else load_policy(dep(self.base))
        if self.base_sha256 and spec_digest(self.base_spec) != self.base_sha256:
            raise PolicyError(f"{self.base_spec}: the weights changed since this study was expanded")
        return load_policy(self.base_spec, hf=self.hf_quiet, sampler=sampler)

    def policy(self, spec: str | None, dep: Dep, sampler: str = "hf"):
        """A learner's policy (artifact id `spec`), or the base policy when `spec` is None."""
        if spec is None:
            return self.base_policy(dep, sampler)
        return load_policy(dep(spec), hf=self.hf_quiet, sampler=sampler)

    def quiet(self) -> None:
        """Silence transformers' own loading/saving bars (imported only for text tasks: the
        planted task never loads transformers)."""
        if self.text:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
