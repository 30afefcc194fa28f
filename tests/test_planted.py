"""The planted task: hidden map, checker against brute force, teacher and expert invariants."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from veriscale.tasks.base import NEVER, Rollouts
from veriscale.tasks.planted import PlantedConfig, PlantedTask


def brute_force_T(trace: list[int], target: list[int]) -> int:
    m = len(target)
    for end in range(m, len(trace) + 1):
        if trace[end - m:end] == target:
            return end
    return NEVER


def test_worked_example_from_spec():
    task = PlantedTask(PlantedConfig(vocab=16, prompt_len=4, answer_len=4))
    task.positions = torch.tensor([2, 0, 3, 1])
    task.offsets = torch.tensor([1, 5, 0, 9])
    prompt = torch.tensor([[3, 7, 1, 0xC]])
    assert task.target(prompt).tolist() == [[2, 8, 0xC, 0]]
    a, b = task.filler_base, task.filler_base + 1
    trace = torch.tensor([[a, b, a, 2, 8, 0xD, 0, b, 2, 8, 0xC, 0, task.eos]])
    T = task.first_success(prompt, trace)
    assert T.tolist() == [12]
    from veriscale.rewards import returns
    assert returns(T, 32).tolist() == [21.0]
    assert returns(task.first_success(prompt, torch.tensor([[2, 8, 0xC, 0]])), 32).tolist() == [29.0]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(2, 5))
def test_checker_matches_brute_force(seed, L, vocab):
    task = PlantedTask(PlantedConfig(vocab=vocab, prompt_len=2, answer_len=2, horizon=64, test_prompts=1))
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(vocab, (16, 2), generator=g)
    traces = torch.randint(vocab, (16, L), generator=g)  # small vocab: many accidental hits
    T = task.first_success(prompts, traces)
    target = task.target(prompts)
    for i in range(16):
        assert T[i].item() == brute_force_T(traces[i].tolist(), target[i].tolist())


def test_check_ignores_tokens_outside_mask(task):
    prompts = task.prompts("train", 2, 0)
    tgt = task.target(prompts)
    tokens = torch.cat([torch.full((2, 2), task.filler_base), tgt], 1)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[1, 2:] = False
    T = task.check(prompts, Rollouts(tokens, mask, mask.sum(1)))
    assert T.tolist() == [2 + task.cfg.answer_len, NEVER]


def test_train_and_test_prompts_are_disjoint_and_seeded(task):
    def ids(p):
        return set((p * task.cfg.vocab ** torch.arange(p.shape[1] - 1, -1, -1)).sum(1).tolist())
    train, test = task.prompts("train", 300, 0), task.prompts("test", 64, 0)
    assert not ids(train) & ids(test)
    assert torch.equal(train, task.prompts("train", 300, 0))
    assert not torch.equal(train, task.prompts("train", 300, 1))


def test_teacher_stops_with_eos_after_first_correct_candidate(task):
    g = torch.Generator().manual_seed(0)
    prompts = task.prompts("train", 500, 0)
    r = task.teacher(prompts, g)
    T = task.check(prompts, r)
    H = task.cfg.horizon
    assert torch.equal(r.counts, r.mask.sum(1)) and (r.counts <= H).all()
    ended = r.counts < H
    # A row that ended early ends with EOS right after its successful candidate.
    last = r.tokens.gather(1, (r.counts - 1).clamp(min=0)[:, None]).squeeze(1)
    assert (last[ended] == task.eos).all()
    assert torch.equal(T[ended], r.counts[ended] - 1)
    assert ((r.tokens == task.pad) == ~r.mask).all()
    # Filler and candidates only: no BOS/SEP, at most one EOS per row.
    assert ((r.tokens == task.eos).sum(1) <= 1).all()
    assert not ((r.tokens == task.bos) | (r.tokens == task.sep)).any()


def test_expert_always_succeeds_and_homogeneous_expert_answers_at_once(task):
    g = torch.Generator().manual_seed(0)
    prompts = task.prompts("train", 400, 0)
    assert (task.check(prompts, task.expert(prompts, g)) <= task.cfg.horizon).all()
    T_h = task.check(prompts, task.expert(prompts, g, homogeneous=True))
    assert (T_h == task.cfg.answer_len).all()


def test_high_heterogeneity_spreads_first_success_more_than_low():
    def spread(het):
        task = PlantedTask(PlantedConfig(heterogeneity=het, horizon=128))
        g = torch.Generator().manual_seed(0)
        prompts = task.prompts("train", 4000, 0)
        T = task.check(prompts, task.expert(prompts, g)).double()
        return T.std().item()
    low, high = spread("low"), spread("high")
    assert high > 1.5 * low, (low, high)


def test_filler_weights_follow_config():
    t = PlantedTask(PlantedConfig(heterogeneity="high", spread_scale=0.25, spread_exponent=1.0))
    assert len(t.filler_weights(64)) == 17 and torch.allclose(t.filler_weights(64), torch.full((17,), 1 / 17))
    t = PlantedTask(PlantedConfig(heterogeneity="high", spread_scale=1.0, spread_exponent=0.5))
    assert len(t.filler_weights(64)) == 9
    t = PlantedTask(PlantedConfig(heterogeneity="custom", custom_weights=[1.0, 0.0, 3.0]))
    assert t.filler_weights().tolist() == [0.25, 0.0, 0.75]
    t = PlantedTask(PlantedConfig(heterogeneity="low", low_filler=3))
    assert t.filler_weights().tolist() == [0.0, 0.0, 0.0, 1.0]
