"""Damaged artifacts are rebuilt on rerun, stale errors cleared, and `run_job` never raises: a
study heals from what a full disk or a flipped byte leaves behind."""

import errno
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from veriscale.cli import main
from veriscale.config import load_config
from veriscale.study import execute
from veriscale.study.execute import run_job
from veriscale.study.spec import StudyConfig
from veriscale.study.store import DONE, load_records
from veriscale.study.sweep import run_study

SMALL = """
name = "heal"
budgets = [4, 8]
n = [8]
heterogeneity = ["high"]
methods = ["base", "sft"]
seeds = [0]
eval_prompts = 8
diagnose_prompts = 0
[planted]
vocab = 8
prompt_len = 3
answer_len = 3
test_prompts = 32
[base]
traces = 64
heldout_traces = 8
[base.model]
n_layer = 1
n_head = 2
d_model = 16
[base.optim]
steps = 2
batch_size = 16
eval_every = 2
[sft]
val_traces = 4
test_traces = 4
optim = { steps = 2, batch_size = 4, eval_every = 1 }
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("heal") / "heal.toml"
    p.write_text(SMALL)
    return p


@pytest.fixture(scope="module")
def clean(small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "study"
    assert run_study(load_config(StudyConfig, small), out, threads=1, progress=False)["error"] == 0
    return out


def _records(study_dir: Path) -> dict:
    return {r["id"]: r["metrics"] for r in load_records(study_dir)}


def _reproduce(small, out):
    return CliRunner().invoke(main, ["reproduce", str(small), "--out", str(out), "--no-report",
                                                     "--workers", "1", "--threads", "1"])


def test_every_artifact_is_sealed_with_its_digests(clean):
    for d in (clean / "artifacts").iterdir():
        files = json.loads((d / DONE).read_text())["files"]
        assert "job.json" in files and all(len(v) == 64 for v in files.values())


def test_a_bit_flipped_artifact_is_rebuilt_and_the_rerun_says_so(small, clean, tmp_path):
    import shutil

    out = tmp_path / "study"
    shutil.copytree(clean, out)
    sft = next(d for d in (out / "artifacts").iterdir() if d.name.startswith("sft-"))
    weights = sft / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    # the evaluation that read it failed (as it does when the digest check refuses the weights)
    rec = next(p for p in (out / "records").glob("*.json") if json.loads(p.read_text())["config"]["method"] == "sft")
    rec.unlink()
    (out / "errors").mkdir()
    (out / "errors" / f"{sft.name}.txt").write_text("an old failure")
    res = _reproduce(small, out)
    assert res.exit_code == 0, res.output + res.stderr
    assert f"rebuilt artifacts/{sft.name}: model.safetensors: digest differs" in res.stderr
    assert _records(out) == _records(clean)  # rebuilt bit for bit
    assert not (out / "errors" / f"{sft.name}.txt").exists()  # the stale error is cleared
    res = _reproduce(small, out)
    assert res.exit_code == 0 and "rebuilt" not in res.stderr and " 0 jobs ran" in res.stdout


def test_an_artifact_without_its_marker_is_not_done(small, clean, tmp_path):
    import shutil

    out = tmp_path / "study"
    shutil.copytree(clean, out)
    for p in (out / "records").glob("*.json"):
        p.unlink()
    base = next(d for d in (out / "artifacts").iterdir() if d.name.startswith("base-"))
    (base / DONE).unlink()  # a directory that merely exists (e.g. copied half-way)
    res = _reproduce(small, out)
    assert res.exit_code == 0 and f"rebuilt artifacts/{base.name}: no valid {DONE}" in res.stderr
    assert _records(out) == _records(clean)


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class _World:
    def quiet(self) -> None:
        pass


@dataclass(frozen=True)
class _DiskFullJob:
    """A job whose work, and then its error report, meet a full disk."""

    kind: str
    id: str = "x-000000000000"
    deps: tuple = ()
    config: dict = field(default_factory=dict)
    world: _World = field(default_factory=_World)
    make = evaluate = _full_disk


@pytest.mark.parametrize("kind", ["sft", "eval"])
def test_run_job_never_raises_even_when_its_error_cannot_be_written(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(execute, "write_text_atomic", _full_disk)
    monkeypatch.setattr(execute, "write_record", _full_disk)
    res = run_job(_DiskFullJob(kind), tmp_path / "study", threads=1)
    assert res["status"] == "error" and "No space left" in res["error"] and "not recorded" in res["error"]
