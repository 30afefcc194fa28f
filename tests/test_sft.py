"""SFT (VF): lowers held-out expert NLL, writes a loadable run dir, is deterministic; early
stopping keeps the best checkpoint; CLI config errors exit 2 before anything is written."""

import hashlib
import json

import pytest
import torch
from click.testing import CliRunner

from veriscale.cli import main
from veriscale.config import load_config
from veriscale.learn.loop import BestCheckpoint, eval_nll
from veriscale.learn.sft import SFTConfig, expert_dataset, train_sft
from veriscale.policy.sampler import load_gpt_policy

def _nll_on_test_experts(run_dir) -> float:
    model, task, _ = load_gpt_policy(run_dir)
    prompts = task.prompts("test", 64, 7)
    return eval_nll(model, *expert_dataset(task, prompts, homogeneous=False, seed=7))


def test_sft_lowers_heldout_expert_nll(base, tmp_path):
    cfg = load_config(SFTConfig, None, ["n=512", "patience=0", "epochs=4", "val_traces=32", "test_traces=32"])
    out = train_sft(base, cfg, tmp_path / "sft")
    model, task, run_cfg = load_gpt_policy(out)
    assert run_cfg["stage"] == "sft" and run_cfg["base"] == str(base)
    before, after = _nll_on_test_experts(base), _nll_on_test_experts(out)
    assert after < before - 0.01, (before, after)


def test_sft_records_its_move_and_stops_after_the_warmup(base, tmp_path):
    cfg = load_config(SFTConfig, None, ["n=64", "epochs=30", "val_traces=32", "test_traces=32", "patience=1",
                                        "optim.warmup=6", "optim.eval_every=2"])
    out = train_sft(base, cfg, tmp_path / "sft")
    run = load_gpt_policy(out)[2]
    assert run["training_traces"] == 64 and run["validation_traces"] == 32
    assert run["steps_planned"] == 30 * 2  # 30 epochs of 64 traces in batches of 32
    assert run["test_nll_after"] < run["test_nll_before"]  # the kept weights moved from the base
    records = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "val_nll" in r]
    assert records[-1]["step"] >= 6  # early stopping never acts inside the warm-up


def test_sft_from_scratch_is_deterministic(base, tmp_path):
    cfg = load_config(SFTConfig, None, ["n=64", "init=scratch", "expert=homogeneous", "optim.steps=4",
                                        "optim.eval_every=2"])
    digests = [hashlib.sha256((train_sft(base, cfg, tmp_path / name) / "model.safetensors").read_bytes()).digest()
               for name in ("a", "b")]
    assert digests[0] == digests[1]
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5 and '"step": -1' in lines[0]  # the initial evaluation, then 4 steps


def test_best_checkpoint_saves_improvements_and_stops_after_patience():
    saved = []
    best = BestCheckpoint("heldout_nll", patience=2, save=lambda: saved.append(best.best_step))
    stops = [best.update({"step": s, "heldout_nll": v}) for s, v in enumerate([3.0, 2.0, 2.5, 1.5, 1.6, 1.7])]
    assert saved == [0, 1, 3] and best.best == 1.5
    assert stops == [False, False, False, False, False, True]
    late = BestCheckpoint("heldout_nll", patience=1, save=lambda: None, min_step=4)
    stops = [late.update({"step": s, "heldout_nll": v}) for s, v in enumerate([3.0, 3.5, 3.6, 3.7, 3.8])]
    assert stops == [False, False, False, False, True]  # patience ran out at step 1, but the warm-up lasts to 4


def test_cli_train_sft_config_error_exits_2_and_writes_nothing(base, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "sft", "--base", str(base), "--out", str(out),
                                    "--set", "expert=mixed"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "expert" in res.output and not out.exists()
    res = CliRunner().invoke(main, ["train", "sft", "--base", str(tmp_path / "none"), "--out", str(out)])
    assert res.exit_code == 2 and "--base" in res.output and not out.exists()


def test_cli_train_sft_writes_run(base, tmp_path):
    res = CliRunner().invoke(main, ["train", "sft", "--base", str(base), "--out", str(tmp_path / "r"),
                                    "--set", "n=32", "--set", "optim.steps=2"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and load_gpt_policy(tmp_path / "r")[2]["stage"] == "sft"
