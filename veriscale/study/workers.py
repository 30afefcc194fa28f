"""The local executor's process pool (study/sweep.py), light on purpose: a spawned worker
imports this module before its first job, so it must not pull in torch.

`Pool` survives the death of a worker as Ray does, and its workers never outlive the sweep.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from veriscale.study.jobs import Job

RETRIES = 3  # a job whose worker dies is run again this many times (Ray's default for a task)


class Pool:
    """A spawn process pool that survives the death of a worker (the OOM killer, a `kill -9`):
    as Ray does, the jobs it was running are submitted again to a fresh pool, each at most
    RETRIES times, then reported as failed. Workers exit when this process dies (`_orphan_watch`)."""

    def __init__(self, workers: int, fn: Callable[..., dict], study_dir: str, threads: int):
        self.workers, self.args = workers, (study_dir, threads)
        self.fn, self.running, self.tries = fn, {}, {}
        self.pool = self._new()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                   initializer=_orphan_watch, initargs=(os.getpid(),))

    def submit(self, job: Job) -> None:
        try:
            future = self.pool.submit(self.fn, job, *self.args)
        except BrokenProcessPool:
            # a worker died since the last wait_any: a fresh pool takes this job, and wait_any
            # resubmits the broken pool's own jobs as it collects them (their pool is not self.pool)
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new()
            future = self.pool.submit(self.fn, job, *self.args)
        self.running[future] = (job, self.pool)

    def wait_any(self) -> dict:
        while True:
            done = next(iter(wait(list(self.running), return_when=FIRST_COMPLETED)[0]))
            job, pool = self.running.pop(done)
            try:
                return done.result()
            except BrokenProcessPool:  # every job the broken pool held lands here, one by one
                if pool is self.pool:  # the first of them replaces the pool
                    pool.shutdown(wait=False, cancel_futures=True)
                    self.pool = self._new()
                tries = self.tries[job.id] = self.tries.get(job.id, 0) + 1
                if tries > RETRIES:
                    return {"id": job.id, "status": "error", "wall_s": 0.0,
                            "error": f"its worker process died {tries} times (killed, e.g. out of memory)"}
                self.submit(job)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _orphan_watch(parent: int) -> None:
    """Pool initializer: exit this worker once the sweep's process is gone. A pool's workers
    otherwise outlive a `kill -9` of the sweep, holding their memory indefinitely."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
