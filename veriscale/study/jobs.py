"""The jobs of a study and what each one does.

A study expands into artifact jobs (a trained base policy, SFT policy, verifier or RL policy,
each a run directory) and evaluation jobs (one per grid point and method, each writing one
record). Every job has an id derived from its full config, so a rerun finds finished work:
an artifact is complete when its directory exists (it is trained in a temporary directory and
renamed into place), an evaluation when its record file reads back with a valid digest.
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

from veriscale import progress
from veriscale.config import ConfigError, deep_merge, from_dict, to_dict
from veriscale.study.spec import StudyConfig


def config_id(kind: str, config: dict[str, Any]) -> str:
    """Stable id: kind plus the first 12 hex digits of the SHA-256 of the canonical JSON config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Job:
    """One unit of work. `deps` are ids of artifact jobs whose directories it reads."""

    id: str
    kind: str  # base | sft | verifier | rl | eval, and llm_* for the LLM track (study/llm_spec.py)
    config: dict[str, Any]
    deps: tuple[str, ...] = ()


def _task_cfg(study: StudyConfig, het: str, horizon: int) -> dict:
    return {**to_dict(study.task), "heterogeneity": het, "horizon": horizon}


def expand(study) -> list[Job]:
    """All jobs of the grid, artifacts first (in dependency order), then evaluations."""
    if study.track == "llm":
        from veriscale.study.llm_spec import expand_llm

        return expand_llm(study)
    artifacts: dict[str, Job] = {}
    evals: list[Job] = []

    def artifact(kind: str, config: dict, deps: tuple[str, ...] = ()) -> str:
        job = Job(config_id(kind, config), kind, config, deps)
        artifacts.setdefault(job.id, job)
        return job.id

    horizons = [max(study.budgets)] if study.mode == "test-time" else sorted(study.budgets)
    for het in study.heterogeneity:
        for H in horizons:
            task = _task_cfg(study, het, H)
            base = artifact("base", {"task": task, "base": to_dict(study.base)})
            budgets = sorted(study.budgets) if study.mode == "test-time" else [H]
            for n in study.n:
                for seed in study.seeds:
                    point = {"heterogeneity": het, "horizon": H, "n": n, "seed": seed}
                    learner = {"task": task, "n": n, "seed": seed}
                    needs_verifier = {"bon", "wmaj", "rl_verifier"} & set(study.methods)
                    ver = artifact("verifier", {**learner, "base": base, "cfg": study.verifier}, (base,)) \
                        if needs_verifier else None
                    for method in study.methods:
                        deps: tuple[str, ...] = (base,)
                        policy = base
                        if method in ("sft", "sft_homogeneous"):
                            expert = "homogeneous" if method == "sft_homogeneous" else "heterogeneous"
                            policy = artifact("sft", {**learner, "base": base, "expert": expert, "cfg": study.sft},
                                              (base,))
                            deps = (base, policy)
                        elif method in ("rl_outcome", "rl_verifier"):
                            reward = method.removeprefix("rl_")
                            rl_deps = (base, ver) if reward == "verifier" else (base,)
                            policy = artifact("rl", {**learner, "base": base, "reward": reward,
                                                     "verifier": ver if reward == "verifier" else None,
                                                     "cfg": study.rl}, rl_deps)
                            deps = (*rl_deps, policy)
                        if method in ("bon", "wmaj"):
                            deps = (base, ver)
                        cfg = {**point, "method": method, "budgets": budgets, "policy": policy,
                               "verifier": ver if method in ("bon", "wmaj") else None,
                               "eval": {"prompts": study.eval_prompts, "samples": study.eval_samples,
                                        "search_n": study.search_n, "temperature": study.temperature},
                               "mode": study.mode}
                        evals.append(Job(config_id("eval", cfg), "eval", cfg, deps))
    return list(artifacts.values()) + evals


# ---- running one job ------------------------------------------------------------------------

def artifact_dir(study_dir: Path, job_id: str) -> Path:
    return study_dir / "artifacts" / job_id


def record_path(study_dir: Path, job_id: str) -> Path:
    return study_dir / "records" / f"{job_id}.json"


def sft_config(cfg: dict, n: int, seed: int, expert: str):
    from veriscale.learn.sft import SFTConfig
    return from_dict(SFTConfig, deep_merge(cfg, {"n": n, "expert": expert, "data_seed": seed, "optim": {"seed": seed}}))


def verifier_config(cfg: dict, n: int, seed: int):
    from veriscale.learn.verifier import VerifierConfig
    return from_dict(VerifierConfig, deep_merge(cfg, {"n": n, "seed": seed, "data_seed": seed}))


def rl_config(cfg: dict, n: int, seed: int, reward: str):
    from veriscale.learn.rl import RLConfig
    return from_dict(RLConfig, deep_merge(cfg, {"n": n, "seed": seed, "data_seed": seed, "reward": reward}))


def check_stage_configs(study) -> None:
    """Validate the study's learner overrides before any work starts (raises ConfigError)."""
    if study.track == "llm":
        from veriscale.study.llm_jobs import check_llm_study

        return check_llm_study(study)
    n, seed = min(study.n), study.seeds[0]
    for label, build in [("sft", lambda: sft_config(study.sft, n, seed, "heterogeneous")),
                         ("verifier", lambda: verifier_config(study.verifier, n, seed)),
                         ("rl", lambda: rl_config(study.rl, n, seed, "outcome"))]:
        try:
            build()
        except ConfigError as e:
            raise ConfigError(f"{label}.{e}") from None


def _train(job: Job, study_dir: Path, out: Path) -> None:
    """Train the artifact of `job` into `out` with the learner the kind names."""
    c = job.config
    if job.kind.startswith("llm_"):
        from veriscale.study.llm_jobs import train_llm_artifact

        return train_llm_artifact(job.kind, c, lambda i: artifact_dir(study_dir, i), out)
    base = artifact_dir(study_dir, c["base"]) if "base" in c and isinstance(c["base"], str) else None
    if job.kind == "base":
        from veriscale.learn.pretrain import PretrainConfig, pretrain
        pretrain(from_dict(PretrainConfig, {**c["base"], "task": c["task"], "out": str(out)}))
    elif job.kind == "sft":
        from veriscale.learn.sft import train_sft
        train_sft(base, sft_config(c["cfg"], c["n"], c["seed"], c["expert"]), out)
    elif job.kind == "verifier":
        from veriscale.learn.verifier import train_verifier
        train_verifier(base, verifier_config(c["cfg"], c["n"], c["seed"]), out)
    elif job.kind == "rl":
        from veriscale.learn.rl import train_rl
        verifier = artifact_dir(study_dir, c["verifier"]) if c["verifier"] else None
        train_rl(base, rl_config(c["cfg"], c["n"], c["seed"], c["reward"]), out, verifier_dir=verifier)
    else:
        raise ValueError(f"unknown artifact kind {job.kind!r}")


def _evaluate(job: Job, study_dir: Path) -> list[dict]:
    from veriscale.evaluate import evaluate_method
    from veriscale.tasks.planted import PlantedConfig, PlantedTask

    if job.config.get("track") == "llm":
        from veriscale.study.llm_jobs import evaluate_llm

        return evaluate_llm(job.config, lambda i: artifact_dir(study_dir, i))
    c, e = job.config, job.config["eval"]
    task = PlantedTask(from_dict(PlantedConfig, json.loads(
        (artifact_dir(study_dir, c["policy"]) / "config.json").read_text())["task"]))
    prompts = task.prompts("test", e["prompts"], 0)  # every method and seed: the same prompts
    method = {"rl_outcome": "rl", "rl_verifier": "rl", "sft_homogeneous": "sft"}.get(c["method"], c["method"])
    return evaluate_method(method, policy_dir=artifact_dir(study_dir, c["policy"]),
                           verifier_dir=artifact_dir(study_dir, c["verifier"]) if c["verifier"] else None,
                           prompts=prompts, budgets=c["budgets"], samples=e["samples"], n_search=e["search_n"],
                           temperature=e["temperature"], seed=c["seed"])


def run_job(job: Job, study_dir: str | Path, threads: int = 0) -> dict:
    """Run one job (in whatever process) and return a small status dict; never raises.

    Artifacts are trained into a temporary directory renamed into place when complete;
    evaluations write their record atomically, with the error when they fail.
    """
    import torch

    from veriscale.study.store import write_record

    study_dir = Path(study_dir)
    if threads:
        torch.set_num_threads(threads)
    start = time.time()
    try:
        missing = [d for d in job.deps if not artifact_dir(study_dir, d).is_dir()]
        if missing:
            raise RuntimeError(f"dependency failed or missing: {', '.join(missing)}")
        if job.kind == "eval":
            with progress.silenced():  # the sweep shows one bar across runs
                rows = _evaluate(job, study_dir)
            write_record(study_dir, job, {"status": "ok", "metrics": rows, "wall_s": time.time() - start})
        else:
            final = artifact_dir(study_dir, job.id)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{job.id}."))
            try:
                with progress.silenced():
                    _train(job, study_dir, tmp)
                (tmp / "job.json").write_text(json.dumps(dataclasses.asdict(job), indent=2, sort_keys=True))
                tmp.rename(final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return {"id": job.id, "status": "ok", "wall_s": time.time() - start}
    except Exception as exc:  # a failing run is recorded and the sweep goes on
        err = f"{type(exc).__name__}: {exc}"
        if job.kind == "eval":
            write_record(study_dir, job, {"status": "error", "error": err, "traceback": traceback.format_exc(),
                                          "wall_s": time.time() - start})
        else:
            (study_dir / "errors").mkdir(parents=True, exist_ok=True)
            (study_dir / "errors" / f"{job.id}.txt").write_text(traceback.format_exc())
        return {"id": job.id, "status": "error", "error": err, "wall_s": time.time() - start}

