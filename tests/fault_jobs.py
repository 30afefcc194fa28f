"""Job functions that kill their own worker, for the pool tests (tests/test_faults.py). A module of
their own, importing nothing heavy: every spawned worker imports it to unpickle them."""

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FakeJob:
    id: str
    deps: tuple = ()


def die_once(job, study_dir, threads):
    """A job whose first worker is killed (as by the OOM killer); it succeeds when run again."""
    mark = Path(study_dir) / f"{job.id}.tried"
    if not mark.exists():
        mark.write_text("")
        os.kill(os.getpid(), signal.SIGKILL)
    return {"id": job.id, "status": "ok", "wall_s": 0.0}


def always_die(job, study_dir, threads):
    os.kill(os.getpid(), signal.SIGKILL)


def hang(job, study_dir, threads):
    time.sleep(600)
