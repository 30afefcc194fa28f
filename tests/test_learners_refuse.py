"""Learners that cannot learn say so before training, with one line naming the data and the
setting to change; no JSON file holds NaN; one spelling of --out and --overwrite everywhere."""

import json
import math
import shutil

import pytest
from click.testing import CliRunner

from veriscale.atomic import write_json_atomic
from veriscale.cli import main
from veriscale.config import load_config
from veriscale.learn.loop import jsonl_log
from veriscale.policy import smollm2
from veriscale.policy.load import load_policy
from veriscale.study import jobs
from veriscale.study.spec import StudyConfig
from veriscale.study.sweep import run_study

TINY_SFT = ["--set", "n=8", "--set", "val_traces=4", "--set", "test_traces=4", "--set", "optim.steps=2"]


def _one_line(res, code=2) -> str:
    lines = res.output.strip().splitlines()
    assert res.exit_code == code and len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


def test_a_verifier_without_a_positive_example_stops_before_training(base, tmp_path):
    out = tmp_path / "v"
    # two tokens cannot hold a three-token answer: no sampled trace succeeds
    line = _one_line(CliRunner().invoke(main, ["train", "verifier", "--base", str(base), "--out", str(out),
                                               "--set", "horizon=2", "--set", "n=8", "--set", "samples.val_prompts=4"]))
    assert "0 of the 8 training traces" in line and "samples.r" in line and "min_positives=0" in line, line
    assert not out.exists()


def test_a_verifier_whose_stopping_metric_is_undefined_stops_before_training(base, tmp_path):
    out = tmp_path / "v"
    line = _one_line(CliRunner().invoke(main, ["train", "verifier", "--base", str(base), "--out", str(out),
                                               "--set", "select=auc", "--set", "samples.val_prompts=1"]))
    assert "select=auc" in line and "samples.val_prompts" in line and "select=loss" in line, line
    assert not out.exists()


def _strict(text: str):
    def refuse(const):
        raise AssertionError(f"{const} in JSON")
    return json.loads(text, parse_constant=refuse)


def test_nan_never_reaches_a_json_file(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"auc": math.nan, "xs": [1.0, math.inf], "t": (-math.inf,)})
    assert _strict((tmp_path / "a.json").read_text()) == {"auc": None, "xs": [1.0, None], "t": [None]}
    with jsonl_log(tmp_path / "m.jsonl") as log:
        log({"step": 0, "heldout_auc": math.nan})
    assert _strict((tmp_path / "m.jsonl").read_text()) == {"step": 0, "heldout_auc": None}


def test_relearn_retrains_a_learner_that_failed(tmp_path, monkeypatch):
    from test_heal import SMALL

    study = tmp_path / "s.toml"
    study.write_text(SMALL)
    out = tmp_path / "study"

    def boom(*args, **kwargs):
        raise RuntimeError("killed mid-training")

    with monkeypatch.context() as m:
        m.setattr(jobs.SFTJob, "train", staticmethod(boom))
        counts = run_study(load_config(StudyConfig, study), out, threads=1, progress=False)
    (failed,) = [p.stem for p in (out / "errors").glob("sft-*.txt")]
    assert counts["error"] >= 1 and not (out / "artifacts" / failed).exists()
    res = CliRunner().invoke(main, ["relearn", str(out), failed, "--out", str(tmp_path / "again")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "again" / "veriscale.json").read_text())["stage"] == "sft"
    line = _one_line(CliRunner().invoke(main, ["relearn", str(out), "sft-000000000000", "--out", str(tmp_path / "x")]))
    assert "not a job of" in line


def test_a_gguf_file_is_converted_as_smollm2s_is(lm_dir, tmp_path, monkeypatch):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    made = []

    def convert(src, out):  # transformers' GGUF reader is exercised by the SmolLM2 tests
        made.append(src)
        shutil.copytree(lm_dir, out)
        return out

    monkeypatch.setenv(smollm2.ENV_DIR, str(tmp_path / "cache" / "smollm2"))
    monkeypatch.setattr(smollm2, "convert", convert)
    assert load_policy(f"hf:{gguf}").kind == "hf" and load_policy(f"hf:{gguf}").kind == "hf"
    assert made == [gguf]  # converted once, then read from the cache
    monkeypatch.undo()
    res = CliRunner().invoke(main, ["evaluate", "--policy", f"hf:{tmp_path / 'bad.gguf'}", "--task",
                                    "gym:basic_arithmetic"])
    assert "no such directory" in _one_line(res)
    (tmp_path / "bad.gguf").write_bytes(b"GGUF")
    assert "cannot convert this GGUF file" in _one_line(CliRunner().invoke(
        main, ["evaluate", "--policy", f"hf:{tmp_path / 'bad.gguf'}", "--task", "gym:basic_arithmetic"]))


PRETRAIN = ["--set", "traces=64", "--set", "budget_mix=[1.0]", "--set", "heldout_traces=8", "--set", "task.horizon=8",
            "--set", "task.test_prompts=16", "--set", "model.n_layer=1", "--set", "model.d_model=16",
            "--set", "model.n_head=2", "--set", "optim.steps=2", "--set", "optim.eval_every=2", "--prompts", "4"]


def test_pretrain_takes_out_and_refuses_a_non_empty_one(tmp_path):
    out = tmp_path / "base"
    res = CliRunner().invoke(main, ["train", "pretrain", "--out", str(out), *PRETRAIN])
    assert res.exit_code == 0 and (out / "veriscale.json").is_file(), res.output
    before = (out / "model.safetensors").read_bytes()
    line = _one_line(CliRunner().invoke(main, ["train", "pretrain", "--out", str(out), *PRETRAIN]))
    assert "not empty" in line and "--overwrite" in line and (out / "model.safetensors").read_bytes() == before
    res = CliRunner().invoke(main, ["train", "pretrain", "--out", str(out), "--overwrite", *PRETRAIN])
    assert res.exit_code == 0, res.output


def test_every_learner_refuses_a_non_empty_out_unless_overwrite(base, tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("not a run")
    for learner in ("sft", "verifier", "rl"):
        line = _one_line(CliRunner().invoke(main, ["train", learner, "--base", str(base), "--out", str(other)]))
        assert "not empty" in line and "--overwrite" in line
    line = _one_line(CliRunner().invoke(main, ["train", "sft", "--base", str(base), "--out", str(other), "--overwrite",
                                               *TINY_SFT]))
    assert "not a run directory" in line and (other / "mine.txt").is_file()
    out = tmp_path / "sft"
    assert CliRunner().invoke(main, ["train", "sft", "--base", str(base), "--out", str(out), *TINY_SFT]).exit_code == 0
    res = CliRunner().invoke(main, ["train", "sft", "--base", str(base), "--out", str(out), "--overwrite", *TINY_SFT])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("command,setting,name", [
    (["evaluate"], ["--temperature", "nan"], "--temperature"),
    (["evaluate"], ["--threshold", "nan"], "--threshold"),
    (["train", "sft"], ["--set", "optim.lr=inf"], "optim.lr"),
    (["train", "verifier"], ["--set", "optim.lr=nan"], "optim.lr"),
    (["train", "rl"], ["--set", "beta=-inf"], "beta"),
])
def test_non_finite_options_are_refused_with_their_name(base, tmp_path, command, setting, name):
    where = ["--policy", str(base)] if command == ["evaluate"] else ["--base", str(base), "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(main, [*command, *where, *setting])
    assert res.exit_code == 2 and name in res.output and "finite" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
