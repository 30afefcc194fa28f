"""The jobs of a study: one graph for every policy and task.

A study expands into artifact jobs and evaluation jobs:
  base      the tiny GPT pretrained on the planted task (policy = "pretrain"; one per level, and
            per H in horizon mode); with a policy spec the base is that policy, no job;
  samples   checked base samples on the n training prompts (learn/samples.py), drawn once with
            the study's sampler and read by the verifier and search-trace SFT of a text study; a
            tiny-GPT verifier whose samples nothing else reads draws them itself, the same way;
  sft | verifier | rl   trained run directories (learn/);
  draw      sampled evaluation traces of one policy (`draw.json`): every evaluation that reads the
            same traces shares them (the base policy's across n, one pool across selection rules);
  eval      one record per grid point and method: the draws graded at every budget.
Every job's id is derived from its full config, so a rerun finds finished work: an artifact is
complete when its completion marker verifies (trained in a temporary directory, sealed, renamed
into place; store.seal), an evaluation when its record reads back with a valid digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from veriscale import progress
from veriscale.atomic import write_text_atomic
from veriscale.config import ConfigError, deep_merge, from_dict, to_dict
from veriscale.learn.rl import RLConfig
from veriscale.learn.sft import SFTConfig
from veriscale.learn.verifier import VerifierConfig
from veriscale.study import run
from veriscale.study.methods import METHODS
from veriscale.study.spec import StudyConfig
from veriscale.study.store import DONE, damage, seal, write_record


def config_id(kind: str, config: dict[str, Any]) -> str:
    """Stable id: kind plus the first 12 hex digits of the SHA-256 of the canonical JSON config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Job:
    """One unit of work. `deps` are ids of artifact jobs whose directories it reads."""

    id: str
    kind: str  # base | samples | sft | verifier | rl | draw | eval
    config: dict[str, Any]
    deps: tuple[str, ...] = ()


# A learner artifact kind -> the config class of its `cfg`.
LEARNERS = {"sft": SFTConfig, "verifier": VerifierConfig, "rl": RLConfig}


def learner_config(study: StudyConfig, kind: str, n: int, seed: int, H: int, **fixed) -> dict:
    """The full config dict of learner `kind` at one grid point: the study's overrides, then what
    the grid point fixes (n, seeds, horizon, the method's options). RL trains at H unless the
    study's [rl] table sets a shorter training horizon (cheaper; the policy is still evaluated at
    every budget)."""
    point = {"sft": {"n": n, "data_seed": seed, "optim": {"seed": seed}},
             "verifier": {"n": n, "seed": seed, "data_seed": seed, "horizon": H, "samples": to_dict(study.samples)},
             "rl": {"n": n, "seed": seed, "data_seed": seed, "horizon": study.rl.get("horizon") or H}}[kind]
    return deep_merge(getattr(study, kind), {**point, **fixed})


def check_learner_configs(study: StudyConfig) -> None:
    """Validate the study's learner overrides before any work starts (ConfigError naming the field)."""
    for kind, cls in LEARNERS.items():
        try:
            from_dict(cls, learner_config(study, kind, min(study.n), study.seeds[0], max(study.budgets)))
        except ConfigError as e:
            raise ConfigError(f"{kind}.{e}") from None


def forcing_at(study: StudyConfig, H: int) -> dict:
    """The budget forcing of a forced draw at budget H, s1's two edits: the cap, and "Wait" in
    place of an end-of-thinking before extend_share x H tokens."""
    return {**to_dict(study.forcing), "min_tokens": round(study.extend_share * H)}


def _world(study: StudyConfig, het: str, H: int, base: str | None, base_sha: str | None) -> dict:
    """What every job of one (level, H) depends on: the task and its config, the base policy."""
    if study.text:
        table = study.gym if study.task.startswith("gym:") else study.files
        return {"task": study.task, "task_cfg": to_dict(table), "base": None, "base_spec": study.policy,
                "base_sha256": base_sha, "hf": to_dict(study.hf)}
    return {"task": "planted", "task_cfg": {**to_dict(study.planted), "heterogeneity": het, "horizon": H},
            "base": base}


def expand(study: StudyConfig) -> list[Job]:
    """All jobs of the grid, artifacts first (in dependency order), then evaluations.

    A spec policy's weights digest is part of every job's config, so a changed model never
    reuses old results. Methods that use no training data have n = None in their config: the
    content-addressed ids collapse their copies at every n into one run per seed.
    """
    return _Grid(study).jobs()


class _Grid:
    """The job graph of one study, built point by point (`jobs`); content-addressed ids make a
    job that two points need one job."""

    def __init__(self, study: StudyConfig):
        self.study = study
        self.methods = [METHODS[m] for m in study.methods]
        self.artifacts: dict[str, Job] = {}
        self.evals: dict[str, Job] = {}

    def artifact(self, kind: str, config: dict, deps: tuple[str | None, ...] = ()) -> str:
        job = Job(config_id(kind, config), kind, config, tuple(d for d in deps if d))
        self.artifacts.setdefault(job.id, job)
        return job.id

    def evaluation(self, config: dict, deps: tuple[str | None, ...]) -> None:
        job = Job(config_id("eval", config), "eval", config, tuple(d for d in deps if d))
        self.evals.setdefault(job.id, job)

    def draw(self, world: dict, policy: str | None, seed: int, per_prompt: int, width: int,
             forcing: dict | None) -> str:
        s = self.study
        cfg = {**world, "policy": policy, "prompts": s.eval_prompts, "per_prompt": per_prompt, "width": width,
               "forcing": forcing, "temperature": s.temperature, "seed": seed, "sampler": s.sampler}
        return self.artifact("draw", cfg, (world["base"], policy if policy != "expert" else None))

    def jobs(self) -> list[Job]:
        s = self.study
        base_sha = run.spec_digest(s.policy) if s.text else None
        for het in s.levels:
            for H in ([max(s.budgets)] if s.mode == "test-time" else sorted(s.budgets)):
                base = None
                if not s.text:
                    task_cfg = _world(s, het, H, None, None)["task_cfg"]
                    base = self.artifact("base", {"task": "planted", "task_cfg": task_cfg, "pretrain": to_dict(s.base)})
                world = _world(s, het, H, base, base_sha)
                point = {**world, "heterogeneity": het, "horizon": H, "mode": s.mode}
                if s.diagnose_prompts:
                    self.evaluation({**point, "n": None, "seed": 0, "method": "diagnose", "accounting": None,
                                     "budgets": [H], "policy": None, "verifier": None, "draws": {},
                                     "eval": {"prompts": s.diagnose_prompts, "samples": s.diagnose_samples,
                                              "temperature": s.temperature}}, (base,))
                for n in s.n:
                    for seed in s.seeds:
                        self.learners_and_evals(world, point, n, seed, H)
        return list(self.artifacts.values()) + list(self.evals.values())

    def learners_and_evals(self, world: dict, point: dict, n: int, seed: int, H: int) -> None:
        """The shared samples and verifier of one (n, seed), then every method's learner, draws
        and evaluations."""
        s, base = self.study, world["base"]
        # a text study samples once, with its sampler (vLLM on a GPU), for every learner that
        # reads base samples; a tiny-GPT verifier draws its own, the same way
        shared = any(m.samples for m in self.methods) or (s.text and any(m.verifier for m in self.methods))
        samples = self.artifact("samples", {**world, "n": n, "seed": seed, "H": H, "sampler": s.sampler,
                                            "cfg": to_dict(s.samples)}, (base,)) if shared else None
        ver = self.artifact("verifier", {**world, "samples": samples,
                                         "cfg": learner_config(s, "verifier", n, seed, H)},
                            (base, samples)) if any(m.verifier for m in self.methods) else None
        budgets = sorted(s.budgets) if s.mode == "test-time" else [H]
        for m in self.methods:
            policy = self.learner(m, world, n, seed, H, samples, ver)
            verifier = ver if m.verifier else None
            for acc in (s.accounting if m.best_of_n else [None]):
                draws = self.draws(m, acc, world, policy, seed, H, budgets)
                # the verifier scores a search pool once, for every method that reads it (bon, wmaj, ...)
                scores = self.artifact("scores", {**world, "prompts": s.eval_prompts, "verifier": verifier,
                                                  "draw": draws[H]}, (base, verifier, draws[H])) \
                    if m.search and verifier else None
                self.evaluation({**point, "n": n if m.uses_data else None, "seed": seed, "method": m.name,
                                 "accounting": acc, "budgets": budgets, "policy": policy, "verifier": verifier,
                                 "scores": scores, "draws": {str(h): d for h, d in draws.items()},
                                 "eval": {"prompts": s.eval_prompts, "samples": s.eval_samples,
                                          "search_n": s.search_n, "temperature": s.temperature}},
                                (base, policy if policy != "expert" else None, verifier, scores, *draws.values()))

    def learner(self, m, world: dict, n: int, seed: int, H: int, samples: str | None, ver: str | None) -> str | None:
        """The policy a method evaluates: its learner's artifact, "expert", or None (the base)."""
        s, base = self.study, world["base"]
        if m.learner == "sft":
            src = samples if m.samples else None
            return self.artifact("sft", {**world, "samples": src,
                                         "cfg": learner_config(s, "sft", n, seed, H, **m.options)}, (base, src))
        if m.learner == "rl":
            v = ver if m.verifier else None
            return self.artifact("rl", {**world, "verifier": v, "cfg": learner_config(s, "rl", n, seed, H, **m.options)},
                                 (base, v))
        return "expert" if m.name == "expert" else None

    def draws(self, m, acc: str | None, world: dict, policy: str | None, seed: int, H: int,
              budgets: list[int]) -> dict[int, str]:
        """budget -> the draw that answers it: one pool of base samples for search, one forced
        draw per budget for forced methods, else one draw at H_max read off by truncation."""
        s = self.study
        if m.search:
            k = 1 if m.name == "early_stop" else s.search_n
            # a pool of H tokens a sample serves the shared accounting too: truncating a sample of
            # H tokens to its first H/k is a sample of H/k tokens (search.Pool.sample_len); with no
            # per-sample accounting to share it with, the shared pool is drawn H/k wide
            own = acc == "shared" and (s.search_pool == "per_accounting" or "per_sample" not in s.accounting)
            return {H: self.draw(world, None, seed, s.eval_samples * k, H // k if own else H, None)}
        if m.name in s.forced_methods:
            return {h: self.draw(world, policy, seed, s.eval_samples, h, forcing_at(s, h)) for h in budgets}
        return {H: self.draw(world, policy, seed, s.eval_samples, H, None)}


def artifact_dir(study_dir: Path, job_id: str) -> Path:
    return Path(study_dir) / "artifacts" / job_id


def record_path(study_dir: Path, job_id: str) -> Path:
    return Path(study_dir) / "records" / f"{job_id}.json"


def run_job(job: Job, study_dir: str | Path, threads: int = 0) -> dict:
    """Run one job (in whatever process) and return a small status dict; never raises.

    Artifacts are made in a temporary directory, sealed with their completion marker
    (store.seal) and renamed into place, replacing a damaged one; an evaluation writes its
    record atomically, with the error when it fails. A job that ends well clears its stale
    errors/ file; one whose error cannot even be written (a full disk) still returns it.
    """
    study_dir = Path(study_dir)
    start = time.time()
    try:
        if threads:
            torch.set_num_threads(threads)
        _run(job, study_dir, start)
        (study_dir / "errors" / f"{job.id}.txt").unlink(missing_ok=True)
        return {"id": job.id, "status": "ok", "wall_s": time.time() - start}
    except Exception as exc:  # a failing run is recorded and the sweep goes on
        err = f"{type(exc).__name__}: {exc}"
        try:
            _record_error(job, study_dir, err, time.time() - start)
        except Exception as again:  # noqa: BLE001 (the disk that failed the job may refuse this too)
            err += f" (not recorded: {type(again).__name__}: {again})"
        return {"id": job.id, "status": "error", "error": err, "wall_s": time.time() - start}


def _run(job: Job, study_dir: Path, start: float) -> None:
    missing = [d for d in job.deps if not (artifact_dir(study_dir, d) / DONE).is_file()]
    if missing:
        raise RuntimeError(f"dependency failed or missing: {', '.join(missing)}")
    dep = lambda i: artifact_dir(study_dir, i)  # noqa: E731
    if job.kind == "eval":
        with progress.silenced():  # the sweep shows one bar across runs
            rows = run.evaluate(job.config, dep)
        write_record(study_dir, job, {"status": "ok", "metrics": rows, **run.learner_summary(job.config, dep),
                                      "wall_s": time.time() - start})
        return
    final = artifact_dir(study_dir, job.id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{job.id}."))
    try:
        with progress.silenced():
            run.make_artifact(job.kind, job.config, dep, tmp)
        # wall_s: the job's time, for the per-stage breakdown of a study's wall time
        (tmp / "job.json").write_text(json.dumps({**dataclasses.asdict(job), "wall_s": time.time() - start},
                                                 indent=2, sort_keys=True))
        seal(tmp)
        if final.is_dir() and damage(final) is None:  # finished meanwhile under the same id: keep it
            return
        if final.is_dir():  # damaged: moved aside under a dot name (clean_partial removes it if killed)
            final.rename(final.parent / f".{job.id}.damaged")
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final.parent / f".{job.id}.damaged", ignore_errors=True)


def _record_error(job: Job, study_dir: Path, err: str, wall_s: float) -> None:
    if job.kind == "eval":
        write_record(study_dir, job, {"status": "error", "error": err, "traceback": traceback.format_exc(),
                                      "wall_s": wall_s})
    else:
        (study_dir / "errors").mkdir(parents=True, exist_ok=True)
        write_text_atomic(study_dir / "errors" / f"{job.id}.txt", traceback.format_exc())
