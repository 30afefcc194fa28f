"""SFT (VF): lowers held-out expert NLL, writes a loadable run dir, is deterministic; early
stopping keeps the best checkpoint; CLI config errors exit 2 before anything is written."""

import hashlib
import json

from click.testing import CliRunner

from veriscale.cli import main
from veriscale.config import load_config
from veriscale.learn.data import lm_rows
from veriscale.learn.loop import BestCheckpoint, FullLogits, eval_nll
from veriscale.learn.sft import SFTConfig, train_sft
from veriscale.policy.base import read_meta
from veriscale.policy.load import load_policy


def _nll_on_test_experts(run_dir) -> float:
    policy = load_policy(run_dir)
    task = policy.task
    prompts = task.prompts("test", 64, 7)
    return eval_nll(FullLogits(policy.model), *lm_rows(task.encode(prompts), task.expert_traces(prompts, 7, False), task.pad))


def _sft(base, cfg, out):
    """train_sft from a fresh copy of the base policy (the learner trains it in place)."""
    policy = load_policy(base)
    return train_sft(policy, policy.task, cfg, out)


def test_sft_lowers_heldout_expert_nll(base, tmp_path):
    cfg = load_config(SFTConfig, None, ["n=512", "patience=0", "epochs=4", "val_traces=32", "test_traces=32"])
    out = _sft(base, cfg, tmp_path / "sft")
    policy, run = load_policy(out), read_meta(out)
    assert run["stage"] == "sft" and run["policy"] == "gpt" and policy.task.cfg == load_policy(base).task.cfg
    before, after = _nll_on_test_experts(base), _nll_on_test_experts(out)
    assert after < before - 0.01, (before, after)


def test_sft_records_its_base(base, tmp_path):
    cfg = load_config(SFTConfig, None, ["n=32", "val_traces=8", "test_traces=8", "optim.steps=1"])
    assert read_meta(_sft(base, cfg, tmp_path / "sft")).get("base") == str(base)


def test_sft_records_its_move_and_stops_after_the_warmup(base, tmp_path):
    cfg = load_config(SFTConfig, None, ["n=64", "epochs=30", "val_traces=32", "test_traces=32", "patience=1",
                                        "optim.warmup=6", "optim.eval_every=2"])
    out = _sft(base, cfg, tmp_path / "sft")
    run = read_meta(out)
    assert run["training_traces"] == 64 and run["validation_traces"] == 32 and run["training_prompts"] == 64
    assert run["steps_planned"] == 30 * 2  # 30 epochs of 64 traces in batches of 32
    assert run["test_nll_after"] < run["test_nll_before"]  # the kept weights moved from the base
    assert run["val_nll_after"] < run["val_nll_before"]
    records = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "val_nll" in r]
    assert records[-1]["step"] >= 6  # early stopping never acts inside the warm-up
    # the kept weights are the best validation evaluation's
    assert run["val_nll_after"] == min(r["val_nll"] for r in records)
    assert run["best_step"] == min(records, key=lambda r: r["val_nll"])["step"]


def test_sft_from_scratch_is_deterministic(base, tmp_path):
    cfg = load_config(SFTConfig, None, ["n=64", "init=scratch", "expert=homogeneous", "optim.steps=4",
                                        "optim.eval_every=2"])
    digests = [hashlib.sha256((_sft(base, cfg, tmp_path / name) / "model.safetensors").read_bytes()).digest()
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


def test_best_checkpoint_can_maximise_and_nan_never_improves():
    saved = []
    best = BestCheckpoint("auc", patience=2, save=lambda: saved.append(best.best_step), higher=True)
    stops = [best.update({"step": s, "auc": v}) for s, v in enumerate([0.5, 0.7, float("nan"), 0.8, 0.6, 0.75])]
    assert saved == [0, 1, 3] and best.best_record["auc"] == 0.8
    assert stops == [False, False, False, False, False, True]


def test_cli_train_sft_config_error_exits_2_and_writes_nothing(base, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "sft", "--base", str(base), "--out", str(out),
                                    "--set", "expert=mixed"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "expert" in res.output and not out.exists()
    res = CliRunner().invoke(main, ["train", "sft", "--base", str(tmp_path / "none"), "--out", str(out)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "--base" in res.output and not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")  # the output directory must be new or empty
    res = CliRunner().invoke(main, ["train", "sft", "--base", str(base), "--out", str(out)])
    assert res.exit_code == 2 and "--out" in res.output and sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_cli_train_sft_writes_run(base, tmp_path):
    out = tmp_path / "r"
    out.mkdir()  # an empty directory is accepted
    res = CliRunner().invoke(main, ["train", "sft", "--base", str(base), "--out", str(out),
                                    "--set", "n=32", "--set", "optim.steps=2"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and read_meta(out)["stage"] == "sft" and load_policy(out).kind == "gpt"
