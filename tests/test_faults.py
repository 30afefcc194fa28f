"""Faults end in one line and heal: a full disk, a killed pool worker, a killed sweep."""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from veriscale import atomic
from veriscale.atomic import write_text_atomic
from veriscale.cli import main
from veriscale.study.sweep import _local_results
from veriscale.study.workers import RETRIES

from fault_jobs import FakeJob, always_die, die_once


def test_a_killed_pool_worker_is_retried_as_ray_does(tmp_path):
    jobs = [FakeJob(f"eval-{i}") for i in range(3)]
    res = list(_local_results(jobs, tmp_path, workers=2, threads=1, fn=die_once))
    assert sorted(r["id"] for r in res) == [j.id for j in jobs] and all(r["status"] == "ok" for r in res)


def test_a_job_that_always_kills_its_worker_fails_after_the_retries(tmp_path):
    (res,) = _local_results([FakeJob("eval-x")], tmp_path, workers=2, threads=1, fn=always_die)
    assert res["status"] == "error" and f"died {RETRIES + 1} times" in res["error"]


SWEEP = """
import sys
from fault_jobs import FakeJob, hang
from veriscale.study.workers import Pool

if __name__ == "__main__":
    pool = Pool(2, hang, sys.argv[1], 1)
    for job in (FakeJob("eval-a"), FakeJob("eval-b")):
        pool.submit(job)
    pool.wait_any()
"""


def _children(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
def test_killing_the_sweep_takes_its_workers_with_it(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env={**os.environ, "PYTHONPATH": f"{Path(__file__).resolve().parents[1]}:{Path(__file__).parent}"})
    deadline = time.time() + 120
    while time.time() < deadline and len(_children(proc.pid)) < 3:  # two workers and the resource tracker
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert len(workers) >= 2, workers
    proc.kill()
    proc.wait()
    while time.time() < deadline and any(Path(f"/proc/{w}").exists() and _alive(w) for w in workers):
        time.sleep(0.2)
    assert not [w for w in workers if _alive(w)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its reaper is init)


def _no_space(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("the old report")
    monkeypatch.setattr(atomic.os, "fsync", _no_space)
    with pytest.raises(OSError):
        write_text_atomic(path, "x" * 1_000_000)
    assert path.read_text() == "the old report" and [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_a_full_disk_ends_a_command_with_one_line(tmp_path, monkeypatch):
    study = tmp_path / "s.toml"
    study.write_text('name = "full"\nbudgets = [4]\nn = [8]\nheterogeneity = ["high"]\nmethods = ["base"]\n'
                     'seeds = [0]\neval_prompts = 4\ndiagnose_prompts = 0\n')
    monkeypatch.setattr(atomic.os, "fsync", _no_space)  # the first atomic write (study.json) fails
    res = CliRunner().invoke(main, ["reproduce", str(study), "--out", str(tmp_path / "out"), "--workers", "1",
                                    "--threads", "1"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and "No space left on device" in lines[0], res.output
