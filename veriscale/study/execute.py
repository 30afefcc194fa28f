"""Running one job of a study in whatever process (a local pool worker, Ray, or this one): its
artifact made in a temporary directory, sealed and renamed into place, or its record written
atomically; the study directory's layout (`artifacts/ID`, `records/ID.json`, `errors/ID.txt`).
The job kinds themselves: study/jobs.py.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import torch

from veriscale import progress
from veriscale.atomic import write_text_atomic
from veriscale.study.jobs import JOB_FILE, Job
from veriscale.study.store import DONE, damage, seal, write_record


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
    job.world.quiet()
    if job.kind == "eval":
        with progress.silenced():  # the sweep shows one bar across runs
            rows = job.evaluate(dep)
        write_record(study_dir, job, {"status": "ok", "metrics": rows, **job.summary(dep),
                                      "wall_s": time.time() - start})
        return
    final = artifact_dir(study_dir, job.id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{job.id}."))
    try:
        with progress.silenced():
            job.make(dep, tmp)
        # wall_s: the job's time, for the per-stage breakdown of a study's wall time
        (tmp / JOB_FILE).write_text(json.dumps({"id": job.id, "kind": job.kind, "config": job.config,
                                                  "deps": list(job.deps), "wall_s": time.time() - start},
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
