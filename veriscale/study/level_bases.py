"""A text study's bases of controlled heterogeneity (`shaped_bases`; learn/shape.py): the checked
samples of the policy they are shaped from, drawn once, and one fine-tuning job per level. The
world of a level names its base, so every method of that level (its diagnosis, samples, learners
and draws) starts from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

from veriscale.config import from_dict, to_dict
from veriscale.learn import samples as samples_
from veriscale.learn.shape import ShapeConfig, shape_base
from veriscale.study.jobs import Job, SamplesJob
from veriscale.study.world import Dep, World


@dataclass(frozen=True)
class ShapedBaseJob(Job):
    """The policy fine-tuned into the base of heterogeneity `level` on the checked `samples`."""

    kind: ClassVar[str] = "shaped_base"
    level: str = "none"
    cfg: dict[str, Any] = field(default_factory=dict)  # the study's ShapeConfig, as a dict
    samples: str = ""

    def fields(self) -> dict[str, Any]:
        return {"level": self.level, "cfg": self.cfg, "samples": self.samples}

    def inputs(self) -> tuple[str | None, ...]:
        return (self.samples,)

    def make(self, dep: Dep, out: Path) -> None:
        task, policy = self.world.make_task(), self.world.base_policy(dep)
        shape_base(policy, task, samples_.read(dep(self.samples), task, policy), from_dict(ShapeConfig, self.cfg),
                   self.level, out)


def level_world(world: World, level: str, cfg: ShapeConfig, sampler: str, artifact: Callable[[Job], str]) -> World:
    """The world of one level: `world` (the policy itself) with its shaped base; `artifact` adds
    a job to the grid and returns its id (the samples are one job for every level)."""
    # The shaping draws its prompts from the task's reserved share, which the learners on the shaped
    # base never draw from: validation prompts are as new to the base as the test prompts are.
    shaping = replace(world, task_cfg=replace(world.task_cfg, reserved=True))
    samples = artifact(SamplesJob(shaping, cfg.prompts, cfg.data_seed, cfg.horizon, sampler,
                                  samples_.SamplesConfig(r=cfg.r, temperature=cfg.temperature,
                                                         val_prompts=cfg.val_prompts)))
    return replace(world, base=artifact(ShapedBaseJob(shaping, level, to_dict(cfg), samples)))
