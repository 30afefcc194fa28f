"""Run a study's grid, resumably: locally in-process, on a local process pool, or on Ray.

Jobs run in dependency levels (base policies, then learners, then RL against verifiers, then
evaluations). Before each level the runner asks the study directory what is already done — an
artifact directory that exists, a record that reads back with a valid digest — and runs only the
rest, so a sweep killed at any point (even `kill -9`) resumes where it stopped, with no lost
and no duplicated records. Failed evaluations are recorded with their error and retried on the
next run; the sweep itself goes on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Literal

from tqdm.auto import tqdm

from veriscale.config import to_dict
from veriscale.policy.checkpoint import write_json_atomic
from veriscale.study.jobs import Job, artifact_dir, expand, record_path, run_job
from veriscale.study.spec import StudyConfig
from veriscale.study.store import read_record

STUDY_FILE = "study.json"


def is_done(job: Job, study_dir: Path) -> bool:
    if job.kind == "eval":
        rec = read_record(record_path(study_dir, job.id))
        return rec is not None and rec["status"] == "ok"
    return artifact_dir(study_dir, job.id).is_dir()


def levels(jobs: list[Job]) -> list[list[Job]]:
    """Group jobs so that every job's dependencies sit in earlier groups."""
    depth: dict[str, int] = {}
    for job in jobs:  # `expand` lists artifacts in dependency order; finished deps count as -1
        depth[job.id] = 1 + max((depth.get(d, -1) for d in job.deps), default=-1)
    out: list[list[Job]] = [[] for _ in range(1 + max(depth.values(), default=0))]
    for job in jobs:
        out[depth[job.id]].append(job)
    return out


def _local_results(jobs: list[Job], study_dir: Path, workers: int, threads: int) -> Iterable[dict]:
    if workers == 1:
        for job in jobs:
            yield run_job(job, study_dir, threads)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, job, str(study_dir), threads) for job in jobs]
        for fut in as_completed(futures):
            yield fut.result()


def _ray_results(jobs: list[Job], study_dir: Path, threads: int, address: str | None) -> Iterable[dict]:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--backend ray needs Ray: pip install 'veriscale[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=threads)(run_job)
    pending = [remote.remote(job, str(study_dir), threads) for job in jobs]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


def clean_partial(study_dir: Path) -> None:
    """Remove what a killed run leaves behind: temporary record files and half-trained
    artifact directories (both are dot-prefixed until renamed into place)."""
    import shutil

    for tmp in (study_dir / "records").glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for tmp in (study_dir / "artifacts").glob(".*"):
        shutil.rmtree(tmp, ignore_errors=True)


def run_study(study: StudyConfig, study_dir: str | Path, *, workers: int = 1,
              backend: Literal["local", "ray"] = "local", ray_address: str | None = None,
              threads: int | None = None, progress: bool = True) -> dict:
    """Run every unfinished job of the study; returns counts of ok / failed / skipped jobs.

    `threads` is torch's CPU threads per job (default: the cores divided among the workers);
    results are bit-identical across backends for the same thread count.
    """
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    clean_partial(study_dir)
    write_json_atomic(study_dir / STUDY_FILE, to_dict(study))
    jobs = expand(study)
    todo = [j for j in jobs if not is_done(j, study_dir)]
    counts = {"jobs": len(jobs), "skipped": len(jobs) - len(todo), "ok": 0, "error": 0}
    bar = tqdm(total=len(todo), desc=f"study {study.name}", unit="job", disable=not progress, dynamic_ncols=True)
    errors = []
    for level in levels(todo):
        results = _ray_results(level, study_dir, threads, ray_address) if backend == "ray" \
            else _local_results(level, study_dir, workers, threads)
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
    from veriscale.study.spec import study_from_dict

    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{study_dir}: no {STUDY_FILE}; not a study directory")
    return study_from_dict(json.loads(path.read_text()))
