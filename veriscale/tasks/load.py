"""`make_task(spec)`: a task from its name, the same spelling in every command and study.

  planted     the planted-subsequence task (tasks/planted.py), configured by a `PlantedConfig`;
  gym:NAME    a reasoning-gym dataset (tasks/gym.py), configured by a `GymConfig`;
  file:PATH   problems from a JSONL/Parquet file (tasks/files.py), configured by a `FilesConfig`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from veriscale.config import ConfigError, from_dict, to_dict
from veriscale.tasks.base import Task
from veriscale.tasks.files import FilesConfig, FileTask
from veriscale.tasks.gym import GymConfig, GymTask
from veriscale.tasks.planted import PlantedConfig, PlantedTask

SPECS = "planted, gym:NAME or file:PATH"


def is_text(spec: str) -> bool:
    return spec.startswith(("gym:", "file:"))


def make_task(spec: str, *, planted: PlantedConfig | None = None, gym: GymConfig | None = None,
              files: FilesConfig | None = None) -> Task:
    """The task named by `spec`, built from its config (defaults when not given); a bad spec or
    configuration raises ConfigError naming the field."""
    if spec == "planted":
        return PlantedTask(planted or PlantedConfig())
    if spec.startswith("gym:"):
        return GymTask(from_dict(GymConfig, {**to_dict(gym or GymConfig()), "name": spec[4:]}, "gym."))
    if spec.startswith("file:"):
        return FileTask(replace(files or FilesConfig(), path=spec[5:]))
    raise ConfigError(f"task: expected {SPECS}, got {spec!r}")


def most(supply: Callable[[int], object], want: int) -> int:
    """The largest k <= want for which `supply(k)` (a task's prompts or validation prompts)
    does not raise ValueError, by bisection: what a default adapts to when a task is small."""
    lo, hi = 0, want
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            supply(mid)
            lo = mid
        except ValueError:
            hi = mid - 1
    return lo
