"""Checkpoints: the safetensors round trip through a run directory is bit-exact; pickle formats,
a weights file that differs from its recorded digest, and truncated weights are refused with one
line naming the path; seeded pretraining is reproducible to the byte."""

import hashlib
import json
from dataclasses import fields

import pytest
import torch

from veriscale.config import to_dict
from veriscale.learn.pretrain import PretrainConfig, pretrain
from veriscale.policy.base import META, PolicyError, check_weights, read_meta
from veriscale.policy.gpt import GPT, GPTConfig
from veriscale.policy.load import load_policy
from veriscale.policy.tiny import load_weights, save_gpt


def _save(path, model, task):
    return save_gpt(path, model, {"stage": "pretrain", "task": to_dict(task.cfg)})


def _one_line_error(excinfo, path) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def test_round_trip_is_bit_exact(tmp_path, tiny_gpt, task):
    run = _save(tmp_path / "run", tiny_gpt, task)
    assert json.loads((run / "config.json").read_text()) == to_dict(tiny_gpt.cfg)  # only the GPTConfig
    meta = read_meta(run)
    assert meta["policy"] == "gpt" and meta["stage"] == "pretrain" and meta["task"] == to_dict(task.cfg)
    assert meta["weights_sha256"] == hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    fresh = GPT(tiny_gpt.cfg)
    load_weights(run / "model.safetensors", fresh)
    for other in (load_policy(run).model, fresh):
        a, b = tiny_gpt.state_dict(), other.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert other.head.weight.data_ptr() == other.tok.weight.data_ptr()  # tying survives
    assert load_policy(run).task.cfg == task.cfg


def test_pickle_checkpoints_are_refused(tmp_path, tiny_gpt, task):
    torch.save(tiny_gpt.state_dict(), tmp_path / "model.pt")
    (tmp_path / "config.json").write_text(json.dumps(to_dict(tiny_gpt.cfg)))
    (tmp_path / META).write_text(json.dumps({"policy": "gpt", "stage": "pretrain", "task": to_dict(task.cfg)}))
    for load in (lambda: load_policy(tmp_path), lambda: check_weights(tmp_path, None)):
        with pytest.raises(PolicyError) as e:
            load()
        msg = _one_line_error(e, tmp_path)
        assert "model.pt" in msg and "pickle-based weights are refused" in msg


def test_modified_weights_fail_the_digest_check(tmp_path, tiny_gpt, task):
    run = _save(tmp_path / "run", tiny_gpt, task)
    weights = run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit of a weight: still a valid safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(PolicyError) as e:
        load_policy(run)
    assert "digest differs" in _one_line_error(e, weights)


def test_truncated_weights_are_refused(tmp_path, tiny_gpt, task):
    run = _save(tmp_path / "run", tiny_gpt, task)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(PolicyError) as e:  # the recorded digest catches it first
        load_policy(run)
    assert "digest differs" in _one_line_error(e, weights)
    meta = read_meta(run)
    del meta["weights_sha256"]  # a run directory without its digest is refused, not loaded unchecked
    (run / META).write_text(json.dumps(meta))
    with pytest.raises(PolicyError) as e:
        load_policy(run)
    assert "no weights_sha256" in _one_line_error(e, run / META)
    with pytest.raises(PolicyError) as e:
        load_weights(weights, GPT(tiny_gpt.cfg))
    assert "unreadable weights" in _one_line_error(e, weights)


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
    policy, meta = load_policy(a), read_meta(a)
    assert meta["stage"] == "pretrain" and meta["policy"] == "gpt" and meta["weights_sha256"] == _digest(a)
    assert policy.task.cfg.horizon == 16 and policy.spec == str(a)
    assert set(json.loads((a / "config.json").read_text())) == {f.name for f in fields(GPTConfig)}
