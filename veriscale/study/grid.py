"""A study's grid expanded into its jobs (study/jobs.py): artifacts first, in dependency order,
then evaluations.

Per (level, H) point one world (task and base policy); per (n, seed) the shared samples and
verifier; per method its learner, its draws and one evaluation per best-of-N accounting.
Content-addressed ids make a job that two points need one job: methods that use no training
data have n = None in their config, so their copies at every n collapse into one run per seed.
A spec policy's weights digest is part of every job's config, so a changed model never reuses
old results.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from veriscale.config import ConfigError, deep_merge, from_dict, to_dict
from veriscale.learn.samples import verifier_labels
from veriscale.learn.verifier import VerifierConfig
from veriscale.policy.forcing import BudgetForcing
from veriscale.study.forcing_choice import chosen_draws
from veriscale.study.level_bases import level_world
from veriscale.study.jobs import (BaseJob, DiagnoseJob, DrawJob, EvalJob, Job, Point, RLJob, SamplesJob,
                                  ScoresJob, SFTJob, VerifierJob)
from veriscale.study.methods import METHODS, Method, split_tag
from veriscale.study.search_choice import search_choice
from veriscale.study.spec import LEARNER_CONFIGS, StudyConfig
from veriscale.study.world import World, spec_digest


def learner_config(study: StudyConfig, kind: str, n: int, seed: int, H: int, **fixed) -> dict[str, Any]:
    """The config dict of learner `kind` at one grid point: the study's table as written, then
    what the grid point fixes (n, seeds, horizon, the method's options). RL trains at H unless
    the study's [rl] table sets a shorter training horizon (cheaper; the policy is still
    evaluated at every budget), and queries the checker at most as often as the verifier of the
    same n is given labels (`label_budget`; the method `rl_outcome_unlimited` lifts it)."""
    labels = verifier_labels(n, study.samples)
    point = {"sft": {"n": n, "data_seed": seed, "optim": {"seed": seed}},
             "verifier": {"n": n, "seed": seed, "data_seed": seed, "horizon": H, "samples": to_dict(study.samples)},
             "rl": {"n": n, "seed": seed, "data_seed": seed, "horizon": study.rl.get("horizon") or H,
                    "label_budget": study.rl.get("label_budget", labels)}}[kind]
    return deep_merge(getattr(study, kind), {**point, **fixed})


def check_learner_configs(study: StudyConfig) -> None:
    """Validate every learner config the grid makes before any work starts (ConfigError naming
    the field)."""
    for kind, cls in LEARNER_CONFIGS.items():
        try:
            from_dict(cls, learner_config(study, kind, min(study.n), study.seeds[0], max(study.budgets)))
        except ConfigError as e:
            raise ConfigError(f"{kind}.{e}") from None
    try:
        from_dict(VerifierConfig, learner_config(study, "verifier", min(study.n), study.seeds[0], max(study.budgets),
                                                 **study.pessimistic))
    except ConfigError as e:
        raise ConfigError(f"pessimistic.{e}") from None


def expand(study: StudyConfig) -> list[Job]:
    """All jobs of the grid, artifacts first (in dependency order), then evaluations."""
    return _Grid(study).jobs()


class _Grid:
    """The job graph of one study, built point by point (`jobs`)."""

    def __init__(self, study: StudyConfig):
        self.study = study
        self.methods = [METHODS[m] for m in study.methods]
        self.artifacts: dict[str, Job] = {}
        self.evals: dict[str, Job] = {}

    def artifact(self, job: Job) -> str:
        self.artifacts.setdefault(job.id, job)
        return job.id

    def evaluation(self, job: Job) -> None:
        self.evals.setdefault(job.id, job)

    def world(self, het: str, H: int, base_sha: str | None) -> World:
        s = self.study
        if s.text:
            table = s.gym if s.task.startswith("gym:") else s.files
            world = World(s.task, table, None, s.policy, base_sha, s.hf)
            return level_world(world, het, s.shape, s.sampler, self.artifact) if s.shaped_bases else world
        planted = World("planted", replace(s.planted, heterogeneity=het, horizon=H))
        return replace(planted, base=self.artifact(BaseJob(planted, to_dict(s.base))))

    def jobs(self) -> list[Job]:
        s = self.study
        base_sha = spec_digest(s.policy) if s.text else None
        for het in s.levels:
            for H in ([max(s.budgets)] if s.mode == "test-time" else sorted(s.budgets)):
                world = self.world(het, H, base_sha)
                point = Point(het, H, s.mode)
                if s.diagnose_prompts:
                    self.evaluation(DiagnoseJob(world, point, s.diagnose_prompts, s.diagnose_samples, s.temperature))
                for n in s.n:
                    for seed in s.seeds:
                        self.learners_and_evals(world, point, n, seed, H)
        return list(self.artifacts.values()) + list(self.evals.values())

    def learners_and_evals(self, world: World, point: Point, n: int, seed: int, H: int) -> None:
        """The shared samples and verifier of one (n, seed), then every method's learner, draws
        and evaluations."""
        s = self.study
        # a text study samples once, with its sampler (vLLM on a GPU), for every learner that
        # reads base samples; a tiny-GPT verifier draws its own, the same way
        shared = any(m.samples for m in self.methods) or (s.text and any(m.verifier for m in self.methods))
        samples = self.artifact(SamplesJob(world, n, seed, H, s.sampler, s.samples)) if shared else None
        # pessimistic -> the verifier job: the point verifier, and the ensemble the *_pess methods read
        # (the same n labelled traces, the study's [pessimistic] fields set over [verifier])
        vers = {p: self.artifact(VerifierJob(world, learner_config(s, "verifier", n, seed, H,
                                                                   **(s.pessimistic if p else {})), samples))
                for p in (False, True) if any(m.verifier and m.pessimistic == p for m in self.methods)}
        budgets = tuple(sorted(s.budgets)) if s.mode == "test-time" else (H,)
        for m in self.methods:
            verifier = vers[m.pessimistic] if m.verifier else None
            policy = self.learner(m, world, n, seed, H, samples, verifier)
            for tag in s.tags(m.name):
                acc, schedule = split_tag(m, tag)
                # shared best-of-N with its N chosen per budget on validation (study/search_choice.py)
                choose_n = acc == "shared" and schedule is None and s.search_validation > 0
                draws = self.draws(m, acc, schedule, world, policy, n, seed, H, budgets, wide=choose_n)
                # the verifier scores a search pool once, for every method that reads it (bon, wmaj, ...)
                scores = self.artifact(ScoresJob(world, s.eval_prompts, verifier, draws[H])) \
                    if m.search and verifier else None
                choice = None
                if choose_n:  # validation prompts outside the verifier's training prompts (a rule without one: any)
                    jobs = search_choice(world, m.name, s.samples_per_problem, budgets, verifier, s.search_validation,
                                         s.eval_samples, (n if m.uses_data else 0, seed), s.temperature, seed,
                                         s.sampler)
                    choice = [self.artifact(j) for j in jobs][-1]
                self.evaluation(EvalJob(world, point, n if m.uses_data else None, seed, m.name, acc, budgets, policy,
                                        verifier, scores, tuple(draws.items()), s.eval_prompts, s.eval_samples,
                                        s.samples_per_problem, s.temperature, schedule, choice))

    def learner(self, m: Method, world: World, n: int, seed: int, H: int, samples: str | None,
                ver: str | None) -> str | None:
        """The policy a method evaluates: its learner's artifact, "expert", or None (the base)."""
        s = self.study
        if m.learner == "sft":
            return self.artifact(SFTJob(world, learner_config(s, "sft", n, seed, H, **m.options),
                                        samples if m.samples else None))
        if m.learner == "rl":
            return self.artifact(RLJob(world, learner_config(s, "rl", n, seed, H, **m.options),
                                       ver if m.verifier else None))
        return "expert" if m.name == "expert" else None

    def draws(self, m: Method, acc: str | None, schedule: str | None, world: World, policy: str | None, n: int,
              seed: int, H: int, budgets: tuple[int, ...], wide: bool = False) -> dict[int, str]:
        """budget -> the draw that answers it: one pool of base samples for search (H tokens a
        sample when `wide`: the pool an N chosen per budget reads); for forced methods one draw
        per budget, with the fixed schedule (schedule "fixed", or no validation) or the forcing
        chosen on validation prompts (study/forcing_choice.py); else one draw at H_max read off
        by truncation."""
        s = self.study

        def draw(policy: str | None, per_prompt: int, width: int, forcing: BudgetForcing | None = None) -> DrawJob:
            return DrawJob(world, policy, s.eval_prompts, per_prompt, width, forcing, s.temperature, seed, s.sampler)

        if m.search:
            plan = m.plan(s.samples_per_problem, acc)
            # a pool of H tokens a sample serves the shared accounting too; with no per-sample
            # accounting to share it with, the fixed-N shared pool is drawn H/N wide
            shared_pool = wide or (s.search_pool == "one" and "per_sample" in s.accounting)
            return {H: self.artifact(draw(None, s.eval_samples * plan.samples, plan.pool_width(H, shared_pool)))}
        if m.name not in s.forced_methods:
            return {H: self.artifact(draw(policy, s.eval_samples, H))}
        fixed = {h: draw(policy, s.eval_samples, h, s.forcing.at(h, s.extend_share)) for h in budgets}
        ids = {h: self.artifact(j) for h, j in fixed.items()}
        if schedule == "fixed" or not s.forcing_validation:
            return ids
        # validation prompts outside this learner's training prompts (none for a method without data)
        jobs, chosen = chosen_draws(fixed, s.forcing_validation, (n if m.uses_data else 0, seed), s.forcing_shares)
        for j in jobs:
            self.artifact(j)
        return {h: self.artifact(j) for h, j in chosen.items()}
