"""Bi-level returns against hand-computed cases, and evaluation by truncation."""

import torch

from veriscale.policy.tiny import GPTPolicy
from veriscale.rewards import budget_metrics, evaluate_budgets, returns
from veriscale.tasks.base import NEVER


def test_return_formula_hand_cases():
    T = torch.tensor([1, 4, 10, 11, NEVER])
    assert returns(T, 10).tolist() == [10.0, 7.0, 1.0, 0.0, 0.0]
    m = budget_metrics(T, torch.tensor([10, 10, 10, 10, 10]), 10)
    assert abs(m.J - 18 / 5) < 1e-12 and abs(m.J_norm - 18 / 50) < 1e-12
    assert abs(m.success - 3 / 5) < 1e-12
    assert m.J_norm_lo <= m.J_norm <= m.J_norm_hi


def test_tokens_are_capped_at_each_budget():
    T = torch.tensor([3, NEVER])
    counts = torch.tensor([4, 64])
    ms = evaluate_budgets(T, counts, [2, 8, 64])
    assert [m.tokens for m in ms] == [2.0, 6.0, 34.0]
    assert [m.success for m in ms] == [0.0, 0.5, 0.5]


def test_truncation_equals_sampling_at_smaller_budget_greedy(task, tiny_gpt):
    sampler = GPTPolicy(tiny_gpt, task)
    prompts = task.prompts("test", 32, 0)
    full = sampler.sample(prompts, 24, temperature=0.0)
    for H in (4, 9, 16):
        short = sampler.sample(prompts, H, temperature=0.0)
        assert torch.equal(short.tokens, full.tokens[:, :H])
        assert torch.equal(short.counts, full.counts.clamp(max=H))
        T_full = task.check(prompts, full)
        T_short = task.check(prompts, short)
        assert torch.equal(T_full <= H, T_short <= H)
        assert torch.equal(torch.where(T_full <= H, T_full, NEVER), T_short)


def test_truncation_on_planted_answers():
    # A trained policy is not needed: plant the target and check T, truncation and returns.
    from veriscale.tasks.planted import PlantedConfig, PlantedTask
    task = PlantedTask(PlantedConfig(vocab=8, prompt_len=3, answer_len=3, horizon=16, test_prompts=4))
    g = torch.Generator().manual_seed(0)
    prompts = task.prompts("train", 200, 0)
    r = task.teacher(prompts, g)
    T = task.check(prompts, r)
    for H in (3, 7, 16):
        cut = r.tokens[:, :H]
        assert torch.equal(task.first_success(prompts, cut) <= H, T <= H)
