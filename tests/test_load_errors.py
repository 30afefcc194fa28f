"""Every damaged or wrong input a user can point a command at is one line naming the path and
what is wrong, exit code 2, no traceback, and nothing written."""

import shutil

import pytest
import torch
from click.testing import CliRunner

from veriscale.cli import main


def _damage(kind: str, src, dst):
    """A copy of run directory `src` at `dst`, damaged as `kind` says."""
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    if kind == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif kind == "corrupted":  # same size, other bytes: only the recorded digest can tell
        data = bytearray(weights.read_bytes())
        data[-16:] = bytes(16)
        weights.write_bytes(bytes(data))
    elif kind == "garbage header":  # no digest recorded: refused before safetensors reads it
        (dst / "veriscale.json").write_text((dst / "veriscale.json").read_text().replace('"weights_sha256"', '"x"'))
        weights.write_bytes(b"\xff" * 64)
    elif kind == "pickle only":
        weights.unlink()
        torch.save({"w": torch.zeros(1)}, dst / "pytorch_model.bin")
    elif kind == "missing":
        shutil.rmtree(dst)
    return dst


CASES = [("truncated", "digest differs"), ("corrupted", "digest differs"), ("garbage header", "no weights_sha256"),
         ("pickle only", "pickle-based weights are refused"), ("missing", "no such directory")]


def _one_line_exit_2(res, *needles):
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("kind,what", CASES)
def test_damaged_tiny_gpt_run(base, tmp_path, kind, what):
    bad = _damage(kind, base, tmp_path / "bad")
    out = tmp_path / "out"
    _one_line_exit_2(CliRunner().invoke(main, ["evaluate", "--policy", str(bad), "--budgets", "8"]), str(bad), what)
    _one_line_exit_2(CliRunner().invoke(main, ["train", "sft", "--base", str(bad), "--out", str(out)]), str(bad), what)
    _one_line_exit_2(CliRunner().invoke(main, ["diagnose", "--policy", str(bad), "--out", str(out)]), str(bad), what)
    assert not out.exists()


@pytest.mark.parametrize("kind,what", [("truncated", "cannot load"), ("pickle only", "pickle-based")])
def test_damaged_transformers_model(lm_dir, tmp_path, kind, what):
    bad = _damage(kind, lm_dir, tmp_path / "bad")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["train", "sft", "--base", f"hf:{bad}", "--task", "gym:basic_arithmetic",
                                    "--out", str(out)])
    _one_line_exit_2(res, str(bad))
    assert what in res.output.lower() or "cannot load" in res.output
    assert not out.exists()


def test_run_directories_of_the_wrong_kind(base, tmp_path):
    out = tmp_path / "out"
    ver = tmp_path / "ver"
    res = CliRunner().invoke(main, ["train", "verifier", "--base", str(base), "--out", str(ver), "--set", "n=8",
                                    "--set", "samples.val_prompts=4", "--set", "optim.steps=1"])
    assert res.exit_code == 0, res.output
    _one_line_exit_2(CliRunner().invoke(main, ["evaluate", "--policy", str(ver), "--budgets", "8"]),
                     str(ver), "'verifier' run directory")
    _one_line_exit_2(CliRunner().invoke(main, ["evaluate", "--policy", str(base), "--method", "bon",
                                               "--verifier", str(base), "--budgets", "8"]), "not a verifier")
    (tmp_path / "plain").mkdir()
    _one_line_exit_2(CliRunner().invoke(main, ["train", "rl", "--base", str(tmp_path / "plain"), "--out", str(out)]),
                     "not a policy")
    assert not out.exists()
