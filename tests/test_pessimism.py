"""The pessimistic verifier (learn/ensemble.py) and its study methods: the ensemble's minimum is
below every member, K = 1 is the point verifier exactly, bootstrap members reuse the same labels
(counted once), the run directory reloads through `open_verifier`, and the *_pess methods get a
verifier job of their own while the plain methods keep their job ids."""

import pytest
import torch

from veriscale.config import ConfigError, load_config
from veriscale.learn.ensemble import EnsembleVerifier, bootstrap, combine, fit_verifier, open_verifier
from veriscale.learn.samples import draw as draw_samples
from veriscale.learn.verifier import Verifier, VerifierConfig, load_verifier
from veriscale.policy.base import read_meta
from veriscale.policy.engine import generate
from veriscale.policy.load import load_policy
from veriscale.policy.tiny import GPTPolicy
from veriscale.study.grid import expand
from veriscale.study.jobs import EvalJob
from veriscale.study.learners import learner_summary
from veriscale.study.methods import METHODS
from veriscale.study.spec import load_study_config

FAST = ["n=16", "samples.val_prompts=16", "optim.steps=4", "optim.eval_every=2", "epochs=1"]


def _random_verifier(tiny_gpt, task, seed: int) -> Verifier:
    torch.manual_seed(seed)
    v = Verifier(GPTPolicy(tiny_gpt, task)).eval()
    torch.nn.init.normal_(v.value.weight, std=0.5)
    return v


def _rollouts(tiny_gpt, task, prompts):
    return generate(tiny_gpt, task.encode(prompts), 20, eos_id=int(task.filler_base), pad_id=task.pad,
                    generator=torch.Generator().manual_seed(0))


def test_combine_rules():
    s = torch.rand(5, 3, 7)  # (K, B, L)
    low, mean = combine(s, "min", 1.0), combine(s, "none", 1.0)
    assert (low[None] <= s).all() and torch.equal(low, s.min(0).values)
    assert torch.allclose(mean, s.mean(0))
    lcb = combine(s, "lcb", 1.0)
    assert (lcb <= mean).all() and (lcb >= 0).all()
    assert torch.allclose(combine(s, "lcb", 0.0), mean)
    assert torch.allclose(lcb, (s.mean(0) - s.std(0)).clamp(0, 1))


def test_ensemble_min_is_below_every_member_and_one_member_is_itself(task, tiny_gpt):
    prompts = task.prompts("test", 12, 0)
    ro = _rollouts(tiny_gpt, task, prompts)
    members = [_random_verifier(tiny_gpt, task, k) for k in range(3)]
    each = torch.stack([m.score(prompts, ro) for m in members])  # (K, B, L)
    low = EnsembleVerifier(members, "min").score(prompts, ro)
    assert low.shape == each.shape[1:] and (low[None] <= each).all() and (low < each.max(0).values).any()
    assert torch.equal(EnsembleVerifier(members[:1], "none").score(prompts, ro), each[0])


def test_bootstrap_keeps_size_and_labels_of_the_same_traces(base):
    policy = load_policy(base)
    s = draw_samples(policy, policy.task, load_config(VerifierConfig, None, ["samples.r=2"]).samples, 16, 16, 0, 0)
    b = bootstrap(s, torch.Generator().manual_seed(3))
    assert len(b.rollouts) == len(s.rollouts) == 32 and b.r == 2
    assert b.val_rollouts is s.val_rollouts and torch.equal(b.val_T, s.val_T)
    # every resampled row is a row of the original: same prompt, trace and label
    for i in range(16):
        j = int((s.prompts == b.prompts[i]).all(1).nonzero()[0])
        for r in range(2):
            assert torch.equal(b.rollouts.tokens[2 * i + r], s.rollouts.tokens[2 * j + r])
            assert b.T[2 * i + r] == s.T[2 * j + r]
    assert len({tuple(p.tolist()) for p in b.prompts}) < 16  # with replacement (this seed repeats one)


def test_pessimism_needs_an_ensemble():
    with pytest.raises(ConfigError, match="pessimism"):
        load_config(VerifierConfig, None, ["pessimism=min"])
    load_config(VerifierConfig, None, ["pessimism=lcb", "ensemble=2"])


def _train(base, overrides, out):
    policy = load_policy(base)
    return fit_verifier(policy, policy.task, load_config(VerifierConfig, None, FAST + overrides), out)


def test_k1_is_the_point_verifier(base, tmp_path):
    """ensemble = 1 (the default spelled out) writes the same run directory and weights."""
    plain, one = _train(base, [], tmp_path / "plain"), _train(base, ["ensemble=1"], tmp_path / "one")
    assert sorted(p.name for p in plain.iterdir()) == sorted(p.name for p in one.iterdir())
    for f in ("model.safetensors", "value_head.safetensors", "metrics.jsonl"):
        assert (plain / f).read_bytes() == (one / f).read_bytes()
    assert "members" not in read_meta(one) and isinstance(load_verifier(one), Verifier)


def test_ensemble_run_reloads_and_counts_labels_once(base, tmp_path):
    plain = _train(base, [], tmp_path / "plain")
    out = _train(base, ["ensemble=3", "pessimism=min"], tmp_path / "ens")
    meta = read_meta(out)
    assert meta["members"] == ["member-0", "member-1", "member-2"]
    for m in meta["members"]:  # every member: safetensors body and head, JSON; no pickle anywhere
        assert {"model.safetensors", "value_head.safetensors", "veriscale.json"} <= {p.name for p in (out / m).iterdir()}
    assert not [p for p in out.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin")]
    assert meta["training_traces"] == read_meta(plain)["training_traces"] == 16
    assert meta["validation_traces"] == read_meta(plain)["validation_traces"] == 16
    assert meta["best_step"] == min(meta["member_best_steps"]) and 0 <= meta["heldout"]["heldout_auc"] <= 1
    dep = {"plain": plain, "ens": out}.__getitem__
    for name, vid in (("bon", "plain"), ("bon_pess", "ens")):  # the record's label count: not multiplied by K
        summary = learner_summary(METHODS[name], None, vid, dep)
        assert summary["data"]["labels"] == 32
        steps = [p["step"] for p in summary["learner"]["verifier"]["curve"]]
        assert steps == sorted(set(steps))  # one member's curve, not the members' logs in turn
    ens, policy = open_verifier(out), load_policy(base)
    assert isinstance(ens, EnsembleVerifier) and ens.pessimism == "min"
    prompts = policy.task.prompts("test", 8, 0)
    ro = policy.sample(prompts, 16, seed=0)
    each = torch.stack([load_verifier(out / m).score(prompts, ro) for m in meta["members"]])
    assert torch.equal(ens.score(prompts, ro), each.min(0).values)
    assert not torch.equal(each[0], each[1])  # resamples differ, so the members do


def test_pessimistic_methods_get_their_own_verifier_job():
    plain = ["base", "sft", "bon", "rl_verifier"]
    over = ["n=[16]", "seeds=[0]", "heterogeneity=['high']", "accounting=['shared']", "vb_reference=rl_verifier"]
    before = expand(load_study_config("studies/didactic-quick.toml", over + [f"methods={plain}"]))
    both = expand(load_study_config("studies/didactic-quick.toml",
                                    over + [f"methods={plain + ['bon_pess', 'rl_verifier_pess']}"]))
    assert {j.id for j in before} <= {j.id for j in both}  # the plain methods' jobs are unchanged
    verifiers = {j.id: j for j in both if j.kind == "verifier"}
    assert len(verifiers) == 2
    evals = {j.method: j for j in both if isinstance(j, EvalJob)}
    rl = {j.id: j for j in both if j.kind == "rl"}
    for name, pess in (("bon", False), ("rl_verifier", False), ("bon_pess", True), ("rl_verifier_pess", True)):
        vid = evals[name].verifier
        cfg = verifiers[vid].cfg
        assert (cfg.get("ensemble"), cfg.get("pessimism")) == ((4, "min") if pess else (None, None))
        if name.startswith("rl"):
            assert rl[evals[name].policy].verifier == vid
    # both verifiers read the same n labelled traces: same n and seeds
    a, b = verifiers.values()
    assert {k: a.cfg[k] for k in ("n", "seed", "data_seed")} == {k: b.cfg[k] for k in ("n", "seed", "data_seed")}


def test_text_ensemble_trains_and_reloads(lm_dir, gym_task, tmp_path):
    """A transformers body copies per member and text prompts (a list) resample like ids."""
    from test_text_learners import _labelled_samples, _policy

    from veriscale.policy.text import HFConfig

    policy = _policy(lm_dir)
    s = _labelled_samples(policy, gym_task)
    cfg = load_config(VerifierConfig, None, ["n=16", f"horizon={s.rollouts.tokens.shape[1]}", "ensemble=2",
                                             "pessimism=lcb", "lcb_k=0.5", "optim.steps=4", "optim.eval_every=2"])
    out = fit_verifier(policy, gym_task, cfg, tmp_path / "ens", samples=s)
    assert read_meta(out)["training_traces"] == 32 and read_meta(out)["validation_traces"] == 16
    ens = open_verifier(out, hf=HFConfig(progress=False))
    rep = s.repeated("train")
    each = torch.stack([m.score(rep, s.rollouts) for m in ens.members])
    assert torch.allclose(ens.score(rep, s.rollouts), (each.mean(0) - 0.5 * each.std(0)).clamp(0, 1))
