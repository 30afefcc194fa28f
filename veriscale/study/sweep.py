"""Run a study's grid, resumably: locally in-process, on a local process pool, or on Ray.

Each job starts as soon as the artifacts it reads are finished and a worker is free (no barrier
between stages, so no core idles while a slow learner of another branch trains), the jobs with
the longest chains of dependents first. Before starting, the runner asks the study directory
what is already done (an artifact whose completion marker verifies, a record that reads back
with a valid digest) and runs only the rest, rebuilding damaged artifacts, so a sweep killed at
any point (even `kill -9`) resumes where it stopped, with no lost and no duplicated records. An
artifact is rebuilt only when an unfinished evaluation reads it: a study whose artifacts were
deleted (or that kept only `records/` and `study.json`) can gain seeds or methods without
retraining what its finished records already measured. Failed evaluations are recorded with
their error and retried on the next run; the sweep itself goes on. A local pool worker that
dies is replaced and its job run again, as Ray does (study/workers.py).

One sweep at a time per study directory: `run_study` holds `study_lock` for the whole sweep, and a
second run on the same directory fails at once with `StudyLocked`, before it writes anything.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Literal

from tqdm.auto import tqdm

from veriscale.config import to_dict
from veriscale.policy.text import HF_BEFORE
from veriscale.atomic import write_json_atomic
from veriscale.study.grid import expand
from veriscale.study.execute import artifact_dir, record_path, run_job
from veriscale.study.jobs import Job
from veriscale.study.lock import study_lock
from veriscale.study.spec import StudyConfig, study_from_dict
from veriscale.study.store import damage, read_record
from veriscale.study.workers import Pool

STUDY_FILE = "study.json"


def is_done(job: Job, study_dir: Path) -> bool:
    if job.kind == "eval":
        rec = read_record(record_path(study_dir, job.id))
        return rec is not None and rec["status"] == "ok"
    return damage(artifact_dir(study_dir, job.id)) is None


def unfinished(jobs: list[Job], study_dir: Path) -> list[Job]:
    """The jobs a sweep runs, in `jobs`' order: every evaluation without a good record and every
    artifact that one of them reads, directly or through another, that is missing or fails its
    completion marker. Only those artifacts are verified (their files hashed)."""
    by_id = {j.id: j for j in jobs}
    done: dict[str, bool] = {}

    def finished(i: str) -> bool:  # each artifact verified once, however many evaluations read it
        if i not in done:
            done[i] = is_done(by_id[i], study_dir)
        return done[i]

    need: set[str] = set()
    stack = [j.id for j in jobs if j.kind == "eval" and not finished(j.id)]
    while stack:
        i = stack.pop()
        if i not in need:
            need.add(i)
            stack.extend(d for d in by_id[i].deps if d not in need and not finished(d))
    return [j for j in jobs if j.id in need]


def damaged(jobs: list[Job], study_dir: Path) -> list[str]:
    """"artifacts/ID: why" of each artifact among `jobs` whose directory exists but fails
    verification: the sweep rebuilds it and says so."""
    dirs = [(j.id, artifact_dir(study_dir, j.id)) for j in jobs if j.kind != "eval"]
    return [f"artifacts/{i}: {damage(d)}" for i, d in dirs if d.is_dir()]


def _ready(job: Job, unfinished: set[str]) -> bool:
    return not any(d in unfinished for d in job.deps)


def levels(jobs: list[Job]) -> dict[str, int]:
    """Each job's level: the most jobs on a chain of dependents from it to an evaluation (an
    evaluation's is 0). `jobs` are in dependency order, so a job's dependents come after it."""
    dependents: dict[str, list[str]] = {j.id: [] for j in jobs}
    for j in jobs:
        for d in j.deps:
            if d in dependents:
                dependents[d].append(j.id)
    level: dict[str, int] = {}
    for j in reversed(jobs):
        level[j.id] = 1 + max((level[k] for k in dependents[j.id]), default=-1)
    return level


def _schedule(jobs: list[Job], submit, wait_any, slots: int | None = None) -> Iterator[dict]:
    """Run `jobs` (listed in dependency order) as soon as their dependencies are finished, with
    no barrier between stages: `submit(job)` starts one, `wait_any()` returns the status dict of
    one that ended. A job whose dependency failed still runs, and fails at once saying so.

    Ready jobs start highest level first (`levels`; list order among equals). With `slots` (the
    pool's workers) at most that many are submitted at once, so the choice is made when a worker
    frees up: a verifier that finishes mid-sweep has its RL learner start next, not behind every
    draw that became ready before it (a pool runs what it was given in the order given)."""
    level = levels(jobs)
    unfinished = {j.id for j in jobs}
    queue = list(jobs)
    running = 0
    while queue or running:
        ready = sorted((j for j in queue if _ready(j, unfinished)), key=lambda j: -level[j.id])
        start = ready if slots is None else ready[:max(0, slots - running)]
        for job in start:
            submit(job)
            running += 1
        started = {j.id for j in start}
        queue = [j for j in queue if j.id not in started]
        res = wait_any()
        running -= 1
        unfinished.discard(res["id"])
        yield res


def _local_results(jobs: list[Job], study_dir: Path, workers: int, threads: int, fn=run_job) -> Iterator[dict]:
    """Run `jobs` with `fn` (run_job) in this process, or on a pool of `workers` processes."""
    if workers == 1:  # in this process, in dependency order
        for job in jobs:
            yield fn(job, study_dir, threads)
        return
    pool = Pool(workers, fn, str(study_dir), threads)
    try:
        yield from _schedule(jobs, pool.submit, pool.wait_any, slots=workers)
    finally:
        pool.close()


def _ray_results(jobs: list[Job], study_dir: Path, threads: int, address: str | None) -> Iterator[dict]:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--executor ray needs Ray: pip install 'veriscale[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=threads)(run_job)
    pending: list = []

    def wait_any() -> dict:
        done, rest = ray.wait(pending, num_returns=1)
        pending[:] = rest
        return ray.get(done[0])

    yield from _schedule(jobs, lambda job: pending.append(remote.remote(job, str(study_dir), threads)), wait_any)


def clean_partial(study_dir: Path) -> None:
    """Remove what a killed run leaves behind: temporary record files and half-trained
    artifact directories (both are dot-prefixed until renamed into place). Only under
    `study_lock`: in a directory that a live sweep is using, these are its work in progress."""
    for tmp in (study_dir / "records").glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for tmp in (study_dir / "artifacts").glob(".*"):
        shutil.rmtree(tmp, ignore_errors=True)


def run_study(study: StudyConfig, study_dir: str | Path, *, workers: int = 1,
              executor: Literal["local", "ray"] = "local", ray_address: str | None = None,
              threads: int | None = None, progress: bool = True) -> dict:
    """Run every unfinished job of the study; returns counts of ok / failed / skipped jobs.

    `threads` is torch's CPU threads per job (default: the cores divided among the workers);
    results are bit-identical across executors for the same thread count. Raises `StudyLocked`,
    having written nothing, when another process is running a sweep on `study_dir`.
    """
    with study_lock(study_dir):
        return _sweep(study, Path(study_dir), workers, executor, ray_address, threads, progress)


def _sweep(study: StudyConfig, study_dir: Path, workers: int, executor: Literal["local", "ray"],
           ray_address: str | None, threads: int | None, progress: bool) -> dict:
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    clean_partial(study_dir)
    write_json_atomic(study_dir / STUDY_FILE, to_dict(study))
    jobs = expand(study)
    todo = unfinished(jobs, study_dir)
    counts = {"jobs": len(jobs), "skipped": len(jobs) - len(todo), "ok": 0, "error": 0,
              "rebuilt": damaged(todo, study_dir)}
    bar = tqdm(total=len(todo), desc=f"study {study.name}", unit="job", disable=not progress, dynamic_ncols=True)
    errors = []
    results = _ray_results(todo, study_dir, threads, ray_address) if executor == "ray" \
        else _local_results(todo, study_dir, workers, threads)
    for res in results:
        counts[res["status"]] += 1
        if res["status"] == "error":
            errors.append(f"{res['id']}: {res['error']}")
        bar.update(1)
        bar.set_postfix(ok=counts["ok"], failed=counts["error"])
    bar.close()
    counts["errors"] = errors
    return counts


def load_study(study_dir: str | Path) -> StudyConfig:
    """The config a study directory was run with (validated again)."""
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{study_dir}: no {STUDY_FILE}; not a study directory")
    data = json.loads(path.read_text())
    if isinstance(data.get("hf"), dict):  # a setting added since the study was stored: what it did then
        data["hf"] = {**HF_BEFORE, **data["hf"]}
    return study_from_dict(data)
