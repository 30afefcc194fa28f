"""One sweep at a time per study directory, checked with two real processes: a holder takes
`study_lock` in a subprocess and waits on its stdin; a second `run_study` on the same directory
fails at once, names the holder and writes nothing; once the holder exits, even by `kill -9`,
the lock is free again."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from veriscale.study.spec import StudyConfig
from veriscale.study.lock import LOCK_FILE, StudyLocked, study_lock
from veriscale.study.sweep import run_study

HOLDER = """
import sys
from veriscale.study.lock import study_lock
with study_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes our stdin (or kills us)
"""


def _start_holder(study_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(study_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # blocks until the holder has the lock; "" if it died
    if line != "locked\n":
        proc.kill()
        pytest.fail(f"the lock holder did not start: {proc.communicate()[1]}")
    return proc


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(d.rglob("*"))}


@pytest.mark.parametrize("release", ["exit", "kill -9"])
def test_second_sweep_on_a_locked_study_fails_at_once_and_writes_nothing(tmp_path, release):
    study_dir = tmp_path / "study"
    holder = _start_holder(study_dir)
    try:
        before = _snapshot(study_dir)
        assert set(before) == {LOCK_FILE}
        assert json.loads(before[LOCK_FILE])["pid"] == holder.pid

        with pytest.raises(StudyLocked) as err:
            run_study(StudyConfig(name="locked"), study_dir, threads=1, progress=False)
        msg = str(err.value)
        assert f"pid {holder.pid} on {socket.gethostname()} since " in msg and "\n" not in msg
        assert _snapshot(study_dir) == before  # no study.json, no records, lock file untouched
    finally:
        if release == "exit":
            holder.stdin.close()
        else:
            holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()
        holder.stderr.close()
    assert holder.returncode == (0 if release == "exit" else -9)

    with study_lock(study_dir):  # the lock file is still there, with the dead holder's pid: no matter
        assert json.loads((study_dir / LOCK_FILE).read_text())["pid"] != holder.pid


def test_lock_is_exclusive_and_released_on_exceptions(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with study_lock(tmp_path):
            with pytest.raises(StudyLocked):  # a second open file description, even in one process
                with study_lock(tmp_path):
                    pass
            1 / 0
    with study_lock(tmp_path):
        pass
