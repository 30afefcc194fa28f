"""RL: the loss on a hand-computed batch, the zero-variance share against p^G + (1-p)^G, a toy
with a known optimum whose expected reward rises, determinism, the NaN stop, the label budget,
and the CLI."""

import hashlib
import json
import math

import pytest
import torch
from click.testing import CliRunner

from veriscale.cli import main
from veriscale.config import ConfigError, to_dict
from veriscale.evaluate import evaluate_method
from veriscale.learn import rl
from veriscale.learn.loop import NonFiniteLoss
from veriscale.learn.samples import SamplesConfig, verifier_labels
from veriscale.learn.rl import RLConfig, group_advantages, rl_loss, train_rl, zero_variance_share
from veriscale.learn.verifier import Verifier
from veriscale.policy.base import read_meta
from veriscale.policy.gpt import GPT, GPTConfig
from veriscale.policy.load import load_policy
from veriscale.policy.tiny import resolve_model_config, save_gpt
from veriscale.tasks.base import Rollouts
from veriscale.tasks.planted import PlantedConfig, PlantedTask


def test_rl_loss_hand_computed():
    # One state per sequence, vocabulary {0, 1}. pi_theta = (1/2, 1/2) in row 0, (e/(1+e), 1/(1+e))
    # in row 1; pi_b = (1/2, 1/2) everywhere. Row 0 sampled token 0 with advantage +1, row 1
    # sampled token 1 with advantage -1; row 1 has a second, masked-out position.
    logits = torch.tensor([[[0.0, 0.0], [5.0, 5.0]], [[1.0, 0.0], [3.0, 0.0]]])
    ref = torch.zeros(2, 2, 2)
    targets = torch.tensor([[0, 0], [1, 0]])
    mask = torch.tensor([[True, False], [True, False]])
    adv = torch.tensor([1.0, -1.0])
    beta = 0.5
    p = math.e / (1 + math.e)
    logp_row1 = math.log(1 - p)  # log pi_theta(1) in row 1
    kl_row1 = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    want = ((-1.0 * math.log(0.5)) + (1.0 * logp_row1) + beta * (0.0 + kl_row1)) / 2  # 2 unmasked tokens
    tok_adv = adv[:, None].expand_as(mask)[mask]  # the learner passes the M sampled tokens only
    loss, stats = rl_loss(logits[mask], ref[mask], targets[mask], tok_adv, beta)
    assert abs(loss.item() - want) < 1e-6
    assert abs(stats["kl"] - kl_row1 / 2) < 1e-6
    entropy_row1 = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert abs(stats["entropy"] - (math.log(2) + entropy_row1) / 2) < 1e-6
    # Temperature changes only the policy-gradient term's distribution.
    loss_t, _ = rl_loss(logits[mask], ref[mask], targets[mask], tok_adv, beta, temperature=2.0)
    q = math.exp(0.5) / (1 + math.exp(0.5))
    assert abs(loss_t.item() - ((-math.log(0.5)) + math.log(1 - q) + beta * kl_row1) / 2) < 1e-6


def test_group_advantages_subtract_the_group_mean():
    R = torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.2, 0.2, 0.2, 0.2]])
    assert torch.allclose(group_advantages(R), torch.tensor([0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("p,G", [(0.3, 4), (0.8, 8), (0.5, 2)])
def test_zero_variance_share_matches_formula(p, G):
    g = torch.Generator().manual_seed(0)
    rewards = (torch.rand(40_000, G, generator=g) < p).float()
    assert abs(zero_variance_share(rewards) - (p**G + (1 - p) ** G)) < 0.01


def _toy_base(path, seed=0):
    """A random tiny GPT on a toy task: V = 4, k = m = 1, H = 4. The optimum answers y* first (reward 1)."""
    task_cfg = PlantedConfig(vocab=4, prompt_len=1, answer_len=1, horizon=4, test_prompts=1, filler_tokens=1)
    task = PlantedTask(task_cfg)
    mcfg = resolve_model_config(GPTConfig(n_layer=1, n_head=2, d_model=32), task)
    torch.manual_seed(seed)
    return save_gpt(path, GPT(mcfg), {"stage": "pretrain", "task": to_dict(task_cfg)})


def _rl(base_dir, cfg, out, verifier=None):
    """train_rl from a fresh copy of the base policy (the learner trains it in place)."""
    policy = load_policy(base_dir)
    return train_rl(policy, policy.task, cfg, out, verifier=verifier)


def _expected_reward(run_dir, prompts) -> float:
    """E[R_H / H] on the training prompts, from 2000 samples each."""
    policy = load_policy(run_dir)
    return evaluate_method("base", policy, policy.task, prompts, [4], samples=2000, seed=11)[0]["J_norm"]


def test_rl_raises_expected_reward_on_toy(tmp_path):
    base = _toy_base(tmp_path / "base")
    cfg = RLConfig(n=3, prompts_per_step=3, G=16, epochs=15, steps=15, lr=1e-2, beta=0.0)
    out = _rl(base, cfg, tmp_path / "rl")
    prompts = load_policy(base).task.prompts("train", cfg.n, cfg.data_seed)
    before, after = _expected_reward(base, prompts), _expected_reward(out, prompts)
    assert after > before + 0.2, (before, after)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 15 and {"reward", "kl", "entropy", "zero_variance_share", "time_sample"} <= set(records[0])
    run = read_meta(out)
    assert run["stage"] == "rl" and run["step"] == 15 and run["reward_queries"] == 15 * 3 * 16


def _digest(run_dir) -> str:
    return hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest()


def test_rl_is_deterministic_and_verifier_reward_runs(tmp_path):
    base = _toy_base(tmp_path / "base")
    cfg = RLConfig(n=4, prompts_per_step=2, G=4, steps=2)
    assert _digest(_rl(base, cfg, tmp_path / "a")) == _digest(_rl(base, cfg, tmp_path / "b"))
    verifier = Verifier(load_policy(base)).eval()  # its own body, not the policy that trains
    cfg = RLConfig(n=4, prompts_per_step=2, G=4, steps=1, reward="verifier")
    out = _rl(base, cfg, tmp_path / "c", verifier=verifier)
    rec = json.loads((out / "metrics.jsonl").read_text())
    assert rec["reward"] == pytest.approx(0.5)  # the untrained verifier scores every prefix 1/2
    with pytest.raises(ValueError, match="needs a verifier"):
        _rl(base, cfg, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_nan_loss_stops_with_error_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    base = _toy_base(tmp_path / "base")
    real = rl.rl_loss
    calls = []

    def poisoned(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 4 else loss), stats

    monkeypatch.setattr(rl, "rl_loss", poisoned)
    with pytest.raises(NonFiniteLoss, match="step 3"):
        _rl(base, RLConfig(n=4, prompts_per_step=2, G=4, steps=6, save_every=2), tmp_path / "rl")
    assert read_meta(tmp_path / "rl")["step"] == 2  # the checkpoint after step 2, the last good one
    load_policy(tmp_path / "rl")  # and its weights match the digest veriscale.json records
    assert len((tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()) == 3


def test_cli_train_rl_needs_a_verifier_for_verifier_reward(tmp_path):
    base = _toy_base(tmp_path / "base")
    out = tmp_path / "rl"
    res = CliRunner().invoke(main, ["train", "rl", "--base", str(base), "--out", str(out), "--set", "reward=verifier"])
    assert res.exit_code == 2 and "--verifier" in res.output and not out.exists()
    res = CliRunner().invoke(main, ["train", "rl", "--base", str(base), "--out", str(out), "--set", "reward=verifier",
                                    "--verifier", str(base)])  # a policy run, not a verifier run
    assert res.exit_code == 2 and "--verifier" in res.output and not out.exists()
    res = CliRunner().invoke(main, ["train", "rl", "--base", str(base), "--out", str(out), "--set", "G=1"])
    assert res.exit_code == 2 and "G" in res.output and not out.exists()
    res = CliRunner().invoke(main, ["train", "rl", "--base", str(base), "--out", str(out), "--set", "n=4",
                                    "--set", "steps=1", "--set", "G=2"])
    assert res.exit_code == 0 and "reward=" in res.output and "kept step 0" in res.output


def test_outcome_reward_is_zero_one_and_return_is_the_shaped_one(task):
    """reward = "outcome" is the paper's 0/1 success within H; "return" is R_H / H."""
    prompts = task.prompts("test", 3, 0)
    tgt, f, H = task.target(prompts), task.filler_base, 8
    tokens = torch.stack([torch.cat([tgt[0], torch.full((5,), f)]),  # T = 3
                          torch.cat([torch.full((5,), f), tgt[1]]),  # T = 8
                          torch.full((8,), f)])  # never
    ro = Rollouts(tokens, torch.ones_like(tokens, dtype=torch.bool), torch.full((3,), H))
    outcome, true = rl.trace_rewards(task, prompts, ro, None, "outcome")
    assert outcome.tolist() == [1.0, 1.0, 0.0]
    shaped, _ = rl.trace_rewards(task, prompts, ro, None, "return")
    assert shaped.tolist() == pytest.approx([(8 - 3 + 1) / 8, 1 / 8, 0.0]) and torch.equal(shaped, true)


def test_plateau_compares_the_last_window_with_the_one_before():
    from veriscale.learn.rl import plateaued
    assert not plateaued([0.1, 0.2, 0.3], 2, 0.0)  # fewer than two windows
    assert not plateaued([0.1, 0.1, 0.3, 0.3], 2, 0.0)  # still rising
    assert plateaued([0.3, 0.3, 0.3, 0.3], 2, 0.0)
    assert plateaued([0.1, 0.1, 0.15, 0.15], 2, 0.1)  # a rise below the tolerance
    assert not plateaued([0.3, 0.3, 0.3, 0.3, 0.3], 2, 0.0)  # checked only at multiples of the window
    assert not plateaued([0.3] * 8, 0, 0.0)  # 0 = never


def test_rl_stops_at_a_reward_plateau_and_counts_what_it_spent(tmp_path):
    base = _toy_base(tmp_path / "base")
    cfg = RLConfig(n=4, prompts_per_step=2, G=4, steps=12, plateau=2, plateau_tol=1.0)  # any rise is within tol
    out = _rl(base, cfg, tmp_path / "rl")
    meta = read_meta(out)
    assert meta["stopped"] == "plateau" and meta["step"] == 4  # checked first after 2 windows of 2 steps
    assert meta["reward_queries"] == 4 * 2 * 4
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("budget, steps, used", [(40, 5, 40), (30, 4, 28), (0, 6, 48)])
def test_rl_outcome_stops_when_its_label_budget_is_spent(tmp_path, budget, steps, used):
    """8 labels a step (2 prompts x G = 4): 40 pay for 5 steps; 30 for 3 steps and a last step of
    one prompt (28), since a second group would exceed them; 0 is unlimited (all 6 steps)."""
    base = _toy_base(tmp_path / "base")
    cfg = RLConfig(n=4, prompts_per_step=2, G=4, steps=6, label_budget=budget)
    meta = read_meta(_rl(base, cfg, tmp_path / "rl"))
    assert (meta["step"], meta["label_queries"], meta["reward_queries"]) == (steps, used, used)
    assert meta["stopped"] == ("labels" if budget else "steps") and meta["label_budget"] == budget
    assert len((tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()) == steps


def test_label_budget_counts_ground_truth_only(tmp_path):
    base = _toy_base(tmp_path / "base")
    verifier = Verifier(load_policy(base)).eval()
    cfg = RLConfig(n=4, prompts_per_step=2, G=4, steps=3, reward="verifier", label_budget=8)
    meta = read_meta(_rl(base, cfg, tmp_path / "rl", verifier=verifier))
    assert (meta["step"], meta["label_queries"], meta["reward_queries"], meta["stopped"]) == (3, 0, 24, "steps")
    with pytest.raises(ConfigError, match="label_budget"):
        RLConfig(G=8, label_budget=4)


def test_the_default_label_budget_is_what_the_verifier_used():
    assert verifier_labels(256, SamplesConfig(r=1, val_prompts=128)) == 384
    assert verifier_labels(16, SamplesConfig(r=2, val_prompts=8)) == 48
