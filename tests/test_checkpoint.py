"""Checkpoints: safetensors round trip is bit-exact; pickle formats are refused; seeded
pretraining is reproducible to the byte."""

import hashlib

import pytest
import torch

from veriscale.config import to_dict
from veriscale.learn.pretrain import PretrainConfig, pretrain
from veriscale.policy import checkpoint
from veriscale.policy.gpt import GPT
from veriscale.policy.sampler import load_gpt_policy


def test_round_trip_is_bit_exact(tmp_path, tiny_gpt):
    checkpoint.save(tmp_path, tiny_gpt, {"policy": "gpt", "model": to_dict(tiny_gpt.cfg)})
    other = GPT(tiny_gpt.cfg)
    checkpoint.load_state(tmp_path, other)
    a, b = tiny_gpt.state_dict(), other.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert other.head.weight.data_ptr() == other.tok.weight.data_ptr()  # tying survives


def test_pickle_checkpoints_are_refused(tmp_path, tiny_gpt):
    torch.save(tiny_gpt.state_dict(), tmp_path / "model.pt")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="pickle-based formats are refused"):
        checkpoint.load_state(tmp_path, GPT(tiny_gpt.cfg))


def _tiny_pretrain(out, seed=0):
    cfg = PretrainConfig(out=str(out), traces=256, heldout_traces=32, budget_mix=[1.0])
    cfg.task.horizon, cfg.task.test_prompts = 16, 32
    cfg.model.n_layer, cfg.model.d_model, cfg.model.n_head = 1, 32, 2
    cfg.optim.steps, cfg.optim.batch_size, cfg.optim.eval_every, cfg.optim.seed = 6, 16, 3, seed
    return pretrain(cfg)


def _digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_pretraining_is_deterministic_and_writes_run_dir(tmp_path):
    a = _tiny_pretrain(tmp_path / "a")
    b = _tiny_pretrain(tmp_path / "b")
    c = _tiny_pretrain(tmp_path / "c", seed=1)
    assert _digest(a) == _digest(b) != _digest(c)
    lines = (a / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and "heldout_loss" in lines[2] and "heldout_loss" in lines[5]
    model, task, cfg = load_gpt_policy(a)
    assert cfg["stage"] == "pretrain" and task.cfg.horizon == 16
