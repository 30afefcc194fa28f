"""The verifier (Algorithms 1 and 2): batched scoring equals the per-example reference, labels
and AUC by hand, and on a small pretrained pi_b it separates correct from incorrect held-out
prefixes (AUC clearly above 0.5, also among prefixes of equal length)."""

import json

import pytest
import torch

from veriscale.config import load_config
from veriscale.learn.verifier import SELECT, Verifier, VerifierConfig, auc, load_verifier, train_verifier
from veriscale.policy.base import PolicyError, read_meta
from veriscale.policy.engine import generate
from veriscale.policy.load import load_policy
from veriscale.policy.tiny import GPTPolicy
from veriscale.tasks.base import Rollouts
from veriscale.tasks.planted import PlantedConfig, PlantedTask


def test_fast_scoring_equals_per_example_reference(task, tiny_gpt):
    verifier = Verifier(GPTPolicy(tiny_gpt, task)).eval()
    torch.nn.init.normal_(verifier.value.weight, std=0.5)
    prompts = task.prompts("test", 24, 0)
    # EOS = a token the random model emits often, so traces end at different lengths.
    ro = generate(tiny_gpt, task.encode(prompts), 20, eos_id=int(task.filler_base), pad_id=task.pad,
                  generator=torch.Generator().manual_seed(0))
    assert 0 < (ro.counts < 20).sum() < len(prompts)
    fast, slow = verifier.score(prompts, ro, batch_size=7), verifier.score_reference(prompts, ro)
    assert fast.shape == (24, 20) and torch.allclose(fast, slow, atol=1e-5)
    # Rollouts rebuilt from stored id rows (how a study reads its draws back) score the same.
    rows = [ro.tokens[i, :ro.counts[i]].tolist() for i in range(len(ro))]
    assert torch.allclose(verifier.score(prompts, verifier.policy.rollouts(rows, 20)), fast, atol=1e-6)
    # Past a trace's end, every column repeats the score of its last prefix.
    i = int((ro.counts < 20).nonzero()[0])
    c = int(ro.counts[i])
    assert (fast[i, c:] == fast[i, c - 1]).all()


def test_planted_prefix_labels_are_the_bilevel_reward():
    task = PlantedTask(PlantedConfig(vocab=16, prompt_len=4, answer_len=2, horizon=8))
    prompts = task.prompts("test", 3, 0)
    tgt, f = task.target(prompts), task.filler_base
    tokens = torch.tensor([[f, *tgt[0].tolist(), f, f], [*tgt[1].tolist(), f, f, f], [f] * 5])
    ro = Rollouts(tokens, torch.ones_like(tokens, dtype=torch.bool), torch.full((3,), 5))
    labels = task.prefix_verdicts(prompts, ro)
    assert labels.int().tolist() == [[0, 0, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 0, 0, 0]]


def test_auc_hand_cases():
    y = torch.tensor([0, 0, 1, 1])
    assert auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert auc(torch.tensor([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert auc(torch.full((4,), 0.5), y) == 0.5  # a constant is exactly chance
    assert auc(torch.tensor([0.1, 0.5, 0.5, 0.9]), y) == 0.875  # one tied pair counts half


def _train(base, overrides, out):
    """train_verifier on a fresh copy of the base policy (its body trains in place)."""
    policy = load_policy(base)
    return train_verifier(policy, policy.task, load_config(VerifierConfig, None, overrides), out)


def test_verifier_separates_heldout_prefixes(base, tmp_path):
    out = _train(base, ["n=128", "samples.r=4", "patience=0", "optim.steps=60"], tmp_path / "v")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    init = records[0]
    run = read_meta(out)
    kept = run["heldout"]  # validation metrics of the kept weights
    assert run["stage"] == "verifier" and run["training_traces"] == 128 * 4 and run["validation_traces"] == 256 * 4
    assert init["heldout_auc"] == 0.5  # the zero-initialised head is a constant
    assert kept["heldout_auc"] > 0.65, kept
    assert kept["heldout_auc_at_length"] > 0.58, kept  # more than "longer prefixes are more often correct"
    assert kept["heldout_loss"] < init["heldout_loss"]
    task = load_policy(base).task
    verifier = load_verifier(out, task)
    prompts = task.prompts("test", 8, 0)
    s = verifier.score(prompts, task.teacher(prompts, torch.Generator().manual_seed(0)))
    assert s.shape == (8, task.cfg.horizon) and ((s > 0) & (s < 1)).all()


def test_select_keeps_the_best_evaluation_by_its_own_metric(base, tmp_path):
    """The same run (same seeds, so the same trajectory) kept by each rule: its own metric's best."""
    kept = {}
    for select in ("loss", "auc", "auc_length"):
        out = _train(base, ["n=32", "samples.r=2", f"select={select}", "patience=0", "optim.steps=12",
                            "optim.eval_every=3", "optim.warmup=0"], tmp_path / select)
        evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                 if "heldout_auc_final" in line]
        run = read_meta(out)
        assert len(evals) == 5 and run["run"]["select"] == select
        kept[select] = (run["best_step"], evals)
    trajectory = [r["heldout_loss"] for r in kept["loss"][1]]
    for select, (step, evals) in kept.items():
        assert [r["heldout_loss"] for r in evals] == trajectory
        key, higher = SELECT[select]
        best = (max if higher else min)(evals, key=lambda r: r[key])  # the first of equals
        assert step == best["step"], select
    assert kept["loss"][0] != kept["auc"][0]  # here the loss falls while the final prefix's AUC does not rise


def test_zero_one_verifier_is_a_thresholded_classifier(base, tmp_path):
    out = _train(base, ["n=16", "samples.r=2", "loss=zero_one", "optim.steps=3", "optim.eval_every=3"],
                 tmp_path / "v01")
    verifier = load_verifier(out)
    task = load_policy(base).task
    prompts = task.prompts("test", 8, 0)
    s = verifier.score(prompts, task.teacher(prompts, torch.Generator().manual_seed(0)))
    assert verifier.hard and set(s.unique().tolist()) <= {0.0, 1.0}
    assert "heldout_error" in json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


def test_load_verifier_refuses_other_runs_and_tasks(base, tmp_path):
    with pytest.raises(PolicyError, match="not a verifier run directory"):
        load_verifier(base)
    out = _train(base, ["n=8", "samples.r=1", "samples.val_prompts=8", "optim.steps=1"], tmp_path / "v")
    other = PlantedTask(PlantedConfig(vocab=8, prompt_len=3, answer_len=3, horizon=16, test_prompts=64, map_seed=5))
    with pytest.raises(PolicyError, match="different task"):
        load_verifier(out, other)
    with pytest.raises(PolicyError, match="'verifier' run directory, not a policy"):  # a verifier is no policy
        load_policy(out)
    (out / "value_head.safetensors").unlink()
    with pytest.raises(PolicyError, match="no value_head.safetensors"):
        load_verifier(out)
