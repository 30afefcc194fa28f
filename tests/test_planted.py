"""The planted task: hidden map, checker against brute force, teacher and expert invariants."""

import math

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


def expert_T_std(het: str, horizon: int = 128, n: int = 4000) -> float:
    task = PlantedTask(PlantedConfig(heterogeneity=het, horizon=horizon))
    prompts = task.prompts("train", n, 0)
    return task.check(prompts, task.expert(prompts, torch.Generator().manual_seed(0))).double().std().item()


def test_levels_order_the_expert_spread_and_none_is_homogeneous():
    none, low, high = (expert_T_std(h) for h in ("none", "low", "high"))
    assert none == 0.0  # one length: l = 0 and the expert's first candidate is right
    # uniform l on 0..a has sd sqrt(((a+1)^2 - 1)/12): a = 8 (low) and 32 (high) at H = 128
    assert abs(low - math.sqrt((9**2 - 1) / 12)) < 0.15 and abs(high - math.sqrt((33**2 - 1) / 12)) < 0.5


def test_spread_grows_with_H_as_beta_says():
    def sd(H, beta):
        task = PlantedTask(PlantedConfig(heterogeneity="high", horizon=H, spread_scale=1.0, spread_exponent=beta))
        p = task.prompts("train", 4000, 0)
        return task.check(p, task.expert(p, torch.Generator().manual_seed(0))).double().std().item()
    assert 3.5 < sd(128, 1.0) / sd(32, 1.0) < 4.5  # linear in H
    assert 1.7 < sd(128, 0.5) / sd(32, 0.5) < 2.3  # like sqrt(H)


def test_expert_q_below_one_gives_search_traces_with_failed_attempts():
    task = PlantedTask(PlantedConfig(heterogeneity="none", horizon=64, q=0.4, expert_q=0.4))
    p = task.prompts("train", 2000, 0)
    T = task.check(p, task.expert(p, torch.Generator().manual_seed(0)))
    m = task.cfg.answer_len
    # T sits at a candidate's end (multiples of m) except for rare targets across two candidates
    assert (T % m == 0).float().mean() > 0.95 and (T > m).float().mean() > 0.4


def test_teacher_stops_at_a_target_spelled_across_adjacent_candidates():
    """With l = 0 the tail of a corrupted candidate and the head of the next can spell the target;
    the teacher must stop there (EOS right after T), not run on to its next 'correct' candidate."""
    task = PlantedTask(PlantedConfig(vocab=2, prompt_len=2, answer_len=2, horizon=32, heterogeneity="none",
                                     q=0.3, test_prompts=1))
    g = torch.Generator().manual_seed(0)
    prompts = task.prompts("train", 3000, 0)
    r = task.teacher(prompts, g)
    T = task.check(prompts, r)
    ended = T <= 32
    assert ended.any()
    eos_at = (r.tokens == task.eos).int().argmax(1)
    assert torch.equal(eos_at[ended], T[ended])  # EOS immediately after the first occurrence
    assert ((r.tokens == task.eos).sum(1) <= 1).all()
    # such accidental matches do happen at this size, so the test exercises the fix
    intended = ((r.tokens[:, :32] < task.cfg.vocab).sum(1) % 2 == 1) & ended
    assert intended.any()


def test_answer_key_is_the_last_complete_candidate():
    task = PlantedTask(PlantedConfig(vocab=16, prompt_len=4, answer_len=4))
    prompts = task.prompts("train", 4, 0)
    tgt = task.target(prompts)
    f, eos = task.filler_base, task.eos
    wrong = (tgt + 1) % 16
    tokens = torch.stack([
        torch.cat([tgt[0], torch.tensor([f]), wrong[0], torch.tensor([eos])]),  # right, then a wrong candidate
        torch.cat([wrong[1], tgt[1], wrong[1][:1], torch.tensor([f])]),  # two candidates in one run, a cut one
        torch.cat([torch.tensor([f] * 7), wrong[2][:3]]),  # no full candidate
        torch.cat([wrong[3][:2], torch.tensor([f]), wrong[3][:2], tgt[3][:3], torch.tensor([f, f])]),  # 2, then 5
    ])
    ro = Rollouts(tokens, torch.ones_like(tokens, dtype=torch.bool), torch.full((4,), tokens.shape[1]))
    answers, valid = task.answer_keys(prompts, ro)
    # the checker credits row 0, but its answer is its last candidate, as for any other trace
    assert task.check(prompts, ro)[0] == 4
    assert torch.equal(answers[0], wrong[0]) and torch.equal(answers[1], tgt[1])
    assert torch.equal(answers[3], torch.cat([wrong[3][:2], tgt[3][:2]]))
    assert valid.tolist() == [True, True, False, True] and answers[2].tolist() == [0] * 4
    # the sampled mask decides what the trace holds: masked-out tokens are not part of it
    short = Rollouts(tokens[:1], torch.arange(tokens.shape[1])[None] < 5, torch.tensor([5]))
    a2, v2 = task.answer_keys(prompts[:1], short)
    assert torch.equal(a2[0], tgt[0]) and v2.item()


def test_validation_prompts_avoid_the_training_prompts():
    task = PlantedTask(PlantedConfig(vocab=4, prompt_len=4, test_prompts=8))
    train = task.prompts("train", 100, 0)
    val = task.validation_prompts(train, 50, 1)
    ids = lambda p: set((p * 4 ** torch.arange(3, -1, -1)).sum(1).tolist())  # noqa: E731
    assert len(val) == 50 and not ids(val) & ids(train)


def test_filler_weights_follow_config():
    t = PlantedTask(PlantedConfig(heterogeneity="high", spread_scale=0.25, spread_exponent=1.0))
    assert len(t.filler_weights(64)) == 17 and torch.allclose(t.filler_weights(64), torch.full((17,), 1 / 17))
    t = PlantedTask(PlantedConfig(heterogeneity="high", spread_scale=1.0, spread_exponent=0.5))
    assert len(t.filler_weights(64)) == 9
    t = PlantedTask(PlantedConfig(heterogeneity="low", low_scale=0.125))
    assert len(t.filler_weights(64)) == 9
    t = PlantedTask(PlantedConfig(heterogeneity="custom", custom_weights=[1.0, 0.0, 3.0]))
    assert t.filler_weights().tolist() == [0.25, 0.0, 0.75]
    t = PlantedTask(PlantedConfig(heterogeneity="none", fixed_filler=3))
    assert t.filler_weights().tolist() == [0.0, 0.0, 0.0, 1.0]


def test_pretraining_curriculum_stages():
    """Early stages draw the high level's filler at f*H (never a fixed length, even for level
    none); the last stage is the level's own data; the steps are split evenly."""
    from veriscale.learn.pretrain import PretrainConfig, stages

    cfg = PretrainConfig(traces=400, task=PlantedConfig(heterogeneity="none", horizon=64),
                         budget_mix=[1.0, 0.125, 0.5])
    task = PlantedTask(cfg.task)
    out = stages(cfg, task)
    assert [o.steps for _, o in out] == [cfg.optim.steps // 3] * 3
    P = task.cfg.prompt_len + 2
    for i, ((inputs, targets, mask), _) in enumerate(out):
        tokens = torch.where(mask, targets, -1)[:, P - 1:]  # (N, L) trace tokens, -1 elsewhere
        filler = ((tokens >= task.filler_base) & (tokens < task.bos)).sum(1)
        if i < 2:  # f = 1/8 and 1/2: variable filler before the answers
            assert filler.float().std() > 0
        else:  # the level's own data: l = 0, so no filler at all
            assert (filler == 0).all()
        assert len(inputs) == 133
