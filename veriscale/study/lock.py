"""One sweep at a time per study directory: `study_lock`, a non-blocking flock on
`<study_dir>/.lock`. Light on purpose (no torch): a refused process answers at once."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Iterator

LOCK_FILE = ".lock"


class StudyLocked(RuntimeError):
    """Another process is running a sweep on this study directory (the message names it)."""


@contextlib.contextmanager
def study_lock(study_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a study directory, or raise `StudyLocked` at once.

    Two sweeps on one directory would run the same jobs and trip over each other's renames and
    temporary files, so the whole sweep runs under a non-blocking `flock` on `<study_dir>/.lock`.
    The kernel drops a flock when its holder exits, however it exits (`kill -9` included), so a
    lock file left behind is never stale: there is nothing to clean up or time out, and the file
    is never deleted (deleting it would let two processes lock two different files). Its JSON
    (pid, host, start time) only serves to name the holder to a process that is refused; a
    refused process writes nothing. The descriptor is not inherited by worker processes.
    """
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(path.read_text())
                who = f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
            except (OSError, ValueError, KeyError, TypeError):  # the holder is still writing it
                who = "another process"
            raise StudyLocked(f"{study_dir} is in use by {who}; one sweep at a time per study directory") from None
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
