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
from veriscale.study.spec import NO_DATA, SEARCH, StudyConfig


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
    """All jobs of the grid, artifacts first (in dependency order), then evaluations.

    Per level and horizon: the base policy, its diagnosis (a record), and per n and seed the
    learners and one evaluation per method label. `base` and `expert` evaluations use no
    training data: their config has n = None, so the content-addressed ids collapse the copies
    at every n into one run per seed.
    """
    if study.track == "llm":
        from veriscale.study.llm_spec import expand_llm

        return expand_llm(study)
    artifacts: dict[str, Job] = {}
    evals: dict[str, Job] = {}

    def artifact(kind: str, config: dict, deps: tuple[str, ...] = ()) -> str:
        job = Job(config_id(kind, config), kind, config, deps)
        artifacts.setdefault(job.id, job)
        return job.id

    def evaluation(config: dict, deps: tuple[str, ...]) -> None:
        job = Job(config_id("eval", config), "eval", config, deps)
        evals.setdefault(job.id, job)

    eval_cfg = {"prompts": study.eval_prompts, "samples": study.eval_samples, "search_n": study.search_n,
                "temperature": study.temperature}
    horizons = [max(study.budgets)] if study.mode == "test-time" else sorted(study.budgets)
    needs_verifier = bool({"bon", "wmaj", "rl_verifier"} & set(study.methods))
    for het in study.heterogeneity:
        for H in horizons:
            task = _task_cfg(study, het, H)
            base = artifact("base", {"task": task, "base": to_dict(study.base)})
            budgets = sorted(study.budgets) if study.mode == "test-time" else [H]
            evaluation({"heterogeneity": het, "horizon": H, "n": None, "seed": 0, "method": "diagnose",
                        "accounting": None, "budgets": [H], "policy": base, "verifier": None, "mode": study.mode,
                        "eval": {"prompts": study.diagnose_prompts, "samples": study.diagnose_samples,
                                 "temperature": study.temperature}}, (base,))
            for n in study.n:
                for seed in study.seeds:
                    learner = {"task": task, "n": n, "seed": seed}
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
                        elif method.startswith("rl_"):
                            reward = method.removeprefix("rl_")
                            rl_deps = (base, ver) if reward == "verifier" else (base,)
                            policy = artifact("rl", {**learner, "base": base, "reward": reward,
                                                     "verifier": ver if reward == "verifier" else None,
                                                     "cfg": study.rl}, rl_deps)
                            deps = (*rl_deps, policy)
                        scored = method in ("bon", "wmaj")
                        if scored:
                            deps = (base, ver)
                        for acc in (study.accounting if method in SEARCH else [None]):
                            evaluation({"heterogeneity": het, "horizon": H, "n": None if method in NO_DATA else n,
                                        "seed": seed, "method": method, "accounting": acc, "budgets": budgets,
                                        "policy": policy,
                                        "verifier": ver if scored or method == "rl_verifier" else None,
                                        "eval": eval_cfg, "mode": study.mode}, deps)
    return list(artifacts.values()) + list(evals.values())


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
    from veriscale.evaluate import diagnose_policy, evaluate_method
    from veriscale.tasks.planted import PlantedConfig, PlantedTask

    if job.config.get("track") == "llm":
        from veriscale.study.llm_jobs import evaluate_llm

        return evaluate_llm(job.config, lambda i: artifact_dir(study_dir, i))
    c, e = job.config, job.config["eval"]
    policy_dir = artifact_dir(study_dir, c["policy"])
    if c["method"] == "diagnose":
        return [diagnose_policy(policy_dir, budget=c["budgets"][0], prompts=e["prompts"], samples=e["samples"],
                                temperature=e["temperature"], seed=c["seed"])]
    task = PlantedTask(from_dict(PlantedConfig, json.loads((policy_dir / "config.json").read_text())["task"]))
    prompts = task.prompts("test", e["prompts"], 0)  # every method and seed: the same prompts
    method = {"rl_outcome": "rl", "rl_return": "rl", "rl_verifier": "rl", "sft_homogeneous": "sft"}.get(
        c["method"], c["method"])
    return evaluate_method(method, policy_dir=policy_dir,
                           verifier_dir=artifact_dir(study_dir, c["verifier"]) if c["verifier"] else None,
                           prompts=prompts, budgets=c["budgets"], samples=e["samples"], n_search=e["search_n"],
                           temperature=e["temperature"], seed=c["seed"], accounting=c["accounting"] or "shared")


def _read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(config.json, metrics.jsonl records) of an artifact directory."""
    cfg = json.loads((run_dir / "config.json").read_text())
    log = run_dir / "metrics.jsonl"
    return cfg, [json.loads(line) for line in log.read_text().splitlines() if line] if log.exists() else []


def learner_summary(job: Job, study_dir: Path) -> dict:
    """What the method's learners did and the data they consumed, for the record.

    `data`: prompts, expert traces (VF), reward-labelled base traces (the verifier's), reward
    queries (online RL: checker or verifier calls), validation traces (used only to stop).
    `learner`: per learner, the evidence that it moved from its start (SFT: test NLL of the
    expert before/after; verifier: validation loss and AUC at its start and at the kept step;
    RL: mean reward over its first and last steps) and where it stopped.
    """
    c = job.config
    data = {"prompts": 0, "expert_traces": 0, "labelled_traces": 0, "reward_queries": 0, "validation_traces": 0}
    learner: dict = {}
    if c["method"] in ("base", "expert", "diagnose", "maj", "oracle"):
        return {"data": data, "learner": learner}
    if c["verifier"]:  # the verifier that scores the search, or that RL trained against
        vcfg, vlog = _read_run(artifact_dir(study_dir, c["verifier"]))
        data.update(prompts=vcfg["run"]["n"], labelled_traces=vcfg["training_traces"],
                    validation_traces=vcfg["validation_traces"])
        learner["verifier"] = {"best_step": vcfg["best_step"], "steps_planned": vcfg["steps_planned"],
                               "start": {k: v for k, v in vlog[0].items() if k.startswith("heldout")},
                               "kept": vcfg["heldout"]}
    if c["method"].startswith("sft"):
        pcfg, _ = _read_run(artifact_dir(study_dir, c["policy"]))
        data.update(prompts=pcfg["run"]["n"], expert_traces=pcfg["training_traces"],
                    validation_traces=pcfg["validation_traces"])
        learner["sft"] = {k: pcfg[k] for k in ("best_step", "steps_planned", "test_nll_before", "test_nll_after")}
    if c["method"].startswith("rl_"):
        pcfg, plog = _read_run(artifact_dir(study_dir, c["policy"]))
        data.update(prompts=pcfg["training_prompts"], reward_queries=pcfg["reward_queries"])
        k = max(1, len(plog) // 5)  # first and last fifth of the steps
        mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
        learner["rl"] = {"steps": len(plog), "reward_first": mean(plog[:k], "reward"),
                         "reward_last": mean(plog[-k:], "reward"), "return_first": mean(plog[:k], "return"),
                         "return_last": mean(plog[-k:], "return"), "kl_last": mean(plog[-k:], "kl")}
    return {"data": data, "learner": learner}


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
            extra = {} if job.config.get("track") == "llm" else learner_summary(job, study_dir)
            write_record(study_dir, job, {"status": "ok", "metrics": rows, **extra, "wall_s": time.time() - start})
        else:
            final = artifact_dir(study_dir, job.id)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{job.id}."))
            try:
                with progress.silenced():
                    _train(job, study_dir, tmp)
                # wall_s: the training time, for the per-stage breakdown of a study's wall time
                (tmp / "job.json").write_text(json.dumps({**dataclasses.asdict(job), "wall_s": time.time() - start},
                                                         indent=2, sort_keys=True))
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

