"""The job kinds of a study, one frozen dataclass each, for every policy and task.

  BaseJob      the tiny GPT pretrained on the planted task (one per level, and per H in horizon
               mode); a text study's base is its policy spec, no job;
  SamplesJob   checked base samples on the n training prompts (learn/samples.py), read by the
               verifier and search-trace SFT;
  SFTJob | VerifierJob | RLJob   trained run directories (learn/);
  DrawJob      sampled evaluation traces of one policy (`draw.json`), shared by every evaluation
               that reads them (the base policy's across n, one pool across selection rules);
  ScoresJob    a verifier's score of every prefix of a search pool;
  EvalJob      one record per grid point and method: the draws graded at every budget;
  DiagnoseJob  one record of the base policy's heterogeneity and anti-concentration.
Each job carries its typed world (study/world.py) and fields; `config` is its canonical JSON
form and `id` = kind + hash of it, so a rerun finds finished work: an artifact whose completion
marker verifies (store.seal), an evaluation whose record reads back with a valid digest. `deps`
are the artifact ids it reads; artifacts `make` a directory, evaluations `evaluate` into metrics
rows. The grid that creates them: study/grid.py; one job run in a process: study/execute.py;
the sweep that schedules them: study/sweep.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, ClassVar

from safetensors.torch import load_file, save_file

from veriscale.atomic import write_json_atomic
from veriscale.config import from_dict, to_dict
from veriscale.evaluate import diagnose_policy, draw, grade_search, grade_sequential
from veriscale.learn import samples as samples_
from veriscale.learn.pretrain import PretrainConfig, pretrain
from veriscale.learn.ensemble import fit_verifier, open_verifier
from veriscale.learn.rl import train_rl
from veriscale.learn.sft import train_sft
from veriscale.policy.forcing import BudgetForcing
from veriscale.search import SearchPlan, repeat_each
from veriscale.study.learners import learner_summary, shaped_base_summary
from veriscale.study.methods import METHODS
from veriscale.study.spec import LEARNER_CONFIGS
from veriscale.study.world import Dep, World
from veriscale.tasks.planted import ExpertSampler

DRAW_FILE = "draw.json"
CHOICE_FILE = "choice.json"  # beside a draw whose forcing was chosen on validation prompts (study/forcing_choice.py)
SEARCH_CHOICES_FILE = "search_choices.json"  # best-of-N's N per budget, chosen on validation (study/search_choice.py)
CHOICES_FILE = "choices.json"  # a forced learner's forcing per budget, chosen on validation (study/forcing_choice.py)
JOB_FILE = "job.json"  # beside every finished artifact: its id, kind, config and wall time (study/execute.py)
SCORES_FILE = "scores.safetensors"


def config_id(kind: str, config: dict[str, Any]) -> str:
    """Stable id: kind plus the first 12 hex digits of the SHA-256 of the canonical JSON config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Job:
    """What every job kind shares: its world, identity and inputs."""

    kind: ClassVar[str]
    world: World

    def fields(self) -> dict[str, Any]:
        """The job's own fields in canonical JSON form (beside its world's)."""
        raise NotImplementedError

    @cached_property
    def config(self) -> dict[str, Any]:
        return {**self.world.as_dict(), **self.fields()}

    @cached_property
    def id(self) -> str:
        return config_id(self.kind, self.config)

    @property
    def deps(self) -> tuple[str, ...]:
        """Ids of the artifacts this job reads (the world's base first)."""
        return tuple(d for d in (self.world.base, *self.inputs()) if d and d != "expert")

    def inputs(self) -> tuple[str | None, ...]:
        return ()


@dataclass(frozen=True)
class BaseJob(Job):
    """Pretrain the tiny-GPT base on the world's planted task (learn/pretrain.py)."""

    kind: ClassVar[str] = "base"
    pretrain: dict[str, Any] = field(default_factory=dict)  # the study's BaseStage, as a dict

    @cached_property
    def config(self) -> dict[str, Any]:  # the base is what the world's `base` names: not part of its own id
        return {"task": self.world.task, "task_cfg": to_dict(self.world.task_cfg), "pretrain": self.pretrain}

    def make(self, dep: Dep, out: Path) -> None:
        pretrain(from_dict(PretrainConfig, {**self.pretrain, "task": to_dict(self.world.task_cfg), "out": str(out)}))


@dataclass(frozen=True)
class SamplesJob(Job):
    """Checked base samples: `cfg.r` per training prompt of the n, at H, plus validation prompts."""

    kind: ClassVar[str] = "samples"
    n: int = 0
    seed: int = 0
    H: int = 0
    sampler: str = "hf"
    cfg: samples_.SamplesConfig = field(default_factory=samples_.SamplesConfig)

    def fields(self) -> dict[str, Any]:
        return {"n": self.n, "seed": self.seed, "H": self.H, "sampler": self.sampler, "cfg": to_dict(self.cfg)}

    def make(self, dep: Dep, out: Path) -> None:
        task = self.world.make_task()
        s = samples_.draw(self.world.base_policy(dep, self.sampler), task, self.cfg, self.n, self.H, self.seed,
                          self.seed)
        samples_.write(out, s, {"n": self.n, "data_seed": self.seed, "val_prompts": self.cfg.val_prompts})


@dataclass(frozen=True)
class LearnerJob(Job):
    """A learner trained from the base policy; `cfg` is its config as the study sets it (the
    study's table where it differs from the defaults, and the grid point's n, seeds, horizon)."""

    cfg: dict[str, Any] = field(default_factory=dict)

    @property
    def config_class(self) -> type:
        return LEARNER_CONFIGS[self.kind]

    @property
    def settings(self):
        """The typed config of the learner."""
        return from_dict(self.config_class, self.cfg)

    def with_cfg(self, cfg: dict[str, Any]) -> "LearnerJob":
        """The same job with another learner config (`veriscale relearn`)."""
        return replace(self, cfg=cfg)


@dataclass(frozen=True)
class SampledLearnerJob(LearnerJob):
    """A learner trained from the base on the shared checked base `samples` (or on data it draws
    or the task writes itself): `train(policy, task, cfg, out, samples=, meta=)` is its learner."""

    samples: str | None = None
    train: ClassVar[Callable[..., Path]]

    def fields(self) -> dict[str, Any]:
        return {"samples": self.samples, "cfg": self.cfg}

    def inputs(self) -> tuple[str | None, ...]:
        return (self.samples,)

    def make(self, dep: Dep, out: Path) -> None:
        task, policy = self.world.make_task(), self.world.base_policy(dep)
        s = samples_.read(dep(self.samples), task, policy) if self.samples else None
        self.train(policy, task, self.settings, out, samples=s, meta={})


@dataclass(frozen=True)
class SFTJob(SampledLearnerJob):
    """VF: SFT on the task's expert traces, or on search traces built from `samples`."""

    kind: ClassVar[str] = "sft"
    train: ClassVar[Callable[..., Path]] = staticmethod(train_sft)


@dataclass(frozen=True)
class VerifierJob(SampledLearnerJob):
    """VB: the verifier of Algorithm 1 (or its pessimistic ensemble), fit on the labelled
    `samples` (or drawing its own)."""

    kind: ClassVar[str] = "verifier"
    train: ClassVar[Callable[..., Path]] = staticmethod(fit_verifier)


@dataclass(frozen=True)
class RLJob(LearnerJob):
    """VB: RL from the base, on the outcome/return or against the trained `verifier`."""

    kind: ClassVar[str] = "rl"
    verifier: str | None = None

    def fields(self) -> dict[str, Any]:
        return {"verifier": self.verifier, "cfg": self.cfg}

    def inputs(self) -> tuple[str | None, ...]:
        return (self.verifier,)

    def make(self, dep: Dep, out: Path) -> None:
        task, policy = self.world.make_task(), self.world.base_policy(dep)
        verifier = open_verifier(dep(self.verifier), task, self.world.hf_quiet) if self.verifier else None
        train_rl(policy, task, self.settings, out, verifier=verifier, meta={})


def held_out(task, prompts: int, validation: tuple[int, int] | None):
    """The first `prompts` test prompts, or (validation = (n, data_seed)) as many validation
    prompts: training-split prompts outside the n training prompts of data_seed, drawn with a
    seed of their own (a choice made on them never sees the test set)."""
    if validation is None:
        return task.prompts("test", prompts, 0)
    n, data_seed = validation
    return task.validation_prompts(task.prompts("train", n, data_seed), prompts, data_seed + 104729)


@dataclass(frozen=True)
class DrawJob(Job):
    """`per_prompt` traces of at most `width` tokens for each of the first `prompts` held-out
    prompts (`held_out`: test, or validation prompts of the learner of (n, data_seed)), of
    `policy` (a learner artifact, "expert", or None: the base), budget-forced at H = width when
    `forcing` is set."""

    kind: ClassVar[str] = "draw"
    policy: str | None = None
    prompts: int = 0
    per_prompt: int = 1
    width: int = 0
    forcing: BudgetForcing | None = None
    temperature: float = 1.0
    seed: int = 0
    sampler: str = "hf"
    validation: tuple[int, int] | None = None

    def fields(self) -> dict[str, Any]:
        # a test draw has no "validation" key, so its id is what it was before validation draws
        return {"policy": self.policy, "prompts": self.prompts, "per_prompt": self.per_prompt, "width": self.width,
                "forcing": to_dict(self.forcing) if self.forcing else None, "temperature": self.temperature,
                "seed": self.seed, "sampler": self.sampler,
                **({"validation": list(self.validation)} if self.validation else {})}

    def inputs(self) -> tuple[str | None, ...]:
        return (self.policy,)

    def make(self, dep: Dep, out: Path) -> None:
        task = self.world.make_task()
        sampler = ExpertSampler(task) if self.policy == "expert" else self.world.policy(self.policy, dep, self.sampler)
        ro = draw(sampler, held_out(task, self.prompts, self.validation), self.per_prompt, self.width,
                  temperature=self.temperature, seed=self.seed, forcing=self.forcing)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / DRAW_FILE, {"width": self.width, "per_prompt": self.per_prompt,
                                            "ids": [ro.tokens[k, :ro.counts[k]].tolist() for k in range(len(ro))]})


def read_draw(directory: Path, policy):
    """A draw's traces as Rollouts (the policy's tokenizer gives text tasks their texts)."""
    d = json.loads((directory / DRAW_FILE).read_text())
    return policy.rollouts(d["ids"], d["width"])


@dataclass(frozen=True)
class ScoresJob(Job):
    """The `verifier`'s score of every prefix of the search pool `draw`, drawn on the first
    `prompts` held-out prompts (`held_out`: test, or the validation prompts of `validation`)."""

    kind: ClassVar[str] = "scores"
    prompts: int = 0
    verifier: str = ""
    draw: str = ""
    validation: tuple[int, int] | None = None

    def fields(self) -> dict[str, Any]:
        # test scores have no "validation" key, so their ids are what they were before validation pools
        return {"prompts": self.prompts, "verifier": self.verifier, "draw": self.draw,
                **({"validation": list(self.validation)} if self.validation else {})}

    def inputs(self) -> tuple[str | None, ...]:
        return (self.verifier, self.draw)

    def make(self, dep: Dep, out: Path) -> None:
        task = self.world.make_task()
        verifier = open_verifier(dep(self.verifier), task, self.world.hf_quiet)
        d = json.loads((dep(self.draw) / DRAW_FILE).read_text())
        prompts = repeat_each(held_out(task, self.prompts, self.validation), d["per_prompt"])
        out.mkdir(parents=True, exist_ok=True)  # (B * per_prompt, width) score of every prefix
        rollouts = verifier.policy.rollouts(d["ids"], d["width"])  # the draw file, read once
        save_file({"scores": verifier.score(prompts, rollouts)}, str(out / SCORES_FILE))


@dataclass(frozen=True)
class Point:
    """Where an evaluation sits in the grid (the report's axes)."""

    heterogeneity: str
    horizon: int
    mode: str


@dataclass(frozen=True)
class EvalJob(Job):
    """One method at one grid point: its `draws` (budget -> draw id) graded at every budget.
    Search methods select under `plan` (its width N and accounting), reading the pool's
    `scores` when the rule needs a verifier; with a `choice` (study/search_choice.py) each
    budget H uses the N chosen for it on validation, the first N samples of every problem of a
    pool of N. A forced method's rows name the forcing that validation chose where it did, a
    search method's the N; `schedule` "fixed" marks the fixed-schedule (fixed-N) twin."""

    kind: ClassVar[str] = "eval"
    point: Point = Point("", 0, "")
    n: int | None = None
    seed: int = 0
    method: str = ""
    accounting: str | None = None
    budgets: tuple[int, ...] = ()
    policy: str | None = None
    verifier: str | None = None
    scores: str | None = None
    draws: tuple[tuple[int, str], ...] = ()
    prompts: int = 0
    samples: int = 1
    N: int = 4
    temperature: float = 1.0
    schedule: str | None = None
    choice: str | None = None

    def fields(self) -> dict[str, Any]:
        return {**self.point.__dict__, "n": self.n, "seed": self.seed, "method": self.method,
                "accounting": self.accounting, "budgets": list(self.budgets), "policy": self.policy,
                "verifier": self.verifier, "scores": self.scores, "draws": {str(h): d for h, d in self.draws},
                "eval": {"prompts": self.prompts, "samples": self.samples, "samples_per_problem": self.N,
                         "temperature": self.temperature}, **({"schedule": self.schedule} if self.schedule else {}),
                **({"choice": self.choice} if self.choice else {})}

    def inputs(self) -> tuple[str | None, ...]:
        return (self.policy, self.verifier, self.scores, self.choice, *(d for _, d in self.draws))

    @property
    def plan(self) -> SearchPlan:
        return METHODS[self.method].plan(self.N, self.accounting)

    def evaluate(self, dep: Dep) -> list[dict]:
        m, task = METHODS[self.method], self.world.make_task()
        decoder = self.world.base_policy(dep)  # every policy of a study shares the base's tokens
        prompts = task.prompts("test", self.prompts, 0)  # every method and seed: the same prompts
        draws = {h: read_draw(dep(d), decoder) for h, d in self.draws}
        if m.search:
            scores = load_file(str(dep(self.scores) / SCORES_FILE))["scores"] if self.scores else None
            problems, pool = repeat_each(prompts, self.samples), draws[max(draws)]
            if self.choice:  # per budget, the first N(H) of the pool's N samples of every problem
                chosen = json.loads((dep(self.choice) / SEARCH_CHOICES_FILE).read_text())["chosen"]
                rows = [{**grade_search(replace(self.plan, N=chosen[str(H)]["N"]), task, problems, pool, [H],
                                        scores=scores, drawn=self.N)[0], "search": chosen[str(H)]}
                        for H in sorted(self.budgets)]
            else:
                rows = grade_search(self.plan, task, problems, pool, list(self.budgets), scores=scores)
        else:
            rows = grade_sequential(task, prompts, self.samples, lambda H: draws.get(H, draws[max(draws)]),
                                    list(self.budgets))
            for H, r in zip(sorted(self.budgets), rows):
                if H in draws and (choice := dep(dict(self.draws)[H]) / CHOICE_FILE).is_file():
                    r["forcing"] = json.loads(choice.read_text())
        return [{"method": m.evaluation, **r} for r in rows]

    def summary(self, dep: Dep) -> dict[str, Any]:
        """learner_summary, and `choice_labels`: the checker verdicts spent choosing this run's
        setting on validation prompts (every sample of the pool that chose best-of-N's N, or of
        every candidate forcing's draw), beside `labels` (what its learners trained and stopped on)."""
        out = learner_summary(METHODS[self.method], self.policy, self.verifier, dep)
        read = lambda d, f: json.loads((dep(d) / f).read_text())  # noqa: E731
        forcing = {read(d, JOB_FILE)["config"]["choice"] for _, d in self.draws if (dep(d) / CHOICE_FILE).is_file()}
        out["data"]["choice_labels"] = (read(self.choice, SEARCH_CHOICES_FILE)["val_prompts"] * self.samples * self.N
                                        if self.choice else sum(len(c["candidates"]) * c["val_prompts"] * self.samples
                                                                for c in (read(f, CHOICES_FILE) for f in forcing)))
        return out


@dataclass(frozen=True)
class DiagnoseJob(Job):
    """The base policy's diagnosis at budget H (diagnose.py): `prompts` x `samples` traces."""

    kind: ClassVar[str] = "eval"
    point: Point = Point("", 0, "")
    prompts: int = 0
    samples: int = 0
    temperature: float = 1.0

    def fields(self) -> dict[str, Any]:
        return {**self.point.__dict__, "n": None, "seed": 0, "method": "diagnose", "accounting": None,
                "budgets": [self.point.horizon], "policy": None, "verifier": None, "draws": {},
                "eval": {"prompts": self.prompts, "samples": self.samples, "temperature": self.temperature}}

    def evaluate(self, dep: Dep) -> list[dict]:
        return [diagnose_policy(self.world.base_policy(dep), self.world.make_task(), budget=self.point.horizon,
                                prompts=self.prompts, samples=self.samples, temperature=self.temperature, seed=0)]

    def summary(self, dep: Dep) -> dict[str, Any]:
        out = learner_summary(None, None, None, dep)
        if self.world.text and self.world.base:  # a shaped base: how it was built, beside what it measures
            out["learner"]["shaped_base"] = shaped_base_summary(dep(self.world.base))
        return out


# A learner artifact kind -> its job class (`veriscale relearn`).
LEARNER_JOBS: dict[str, type[LearnerJob]] = {j.kind: j for j in (SFTJob, VerifierJob, RLJob)}
