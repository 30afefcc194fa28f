"""Search under a token budget: pass@k by hand and against the oracle on every subset, answer
extraction and votes by hand, no method charging more than H, and evaluate/CLI end to end."""

import dataclasses
import itertools
import math

import pytest
import torch
from click.testing import CliRunner

from veriscale.cli import main
from veriscale.config import load_config, to_dict
from veriscale.evaluate import EVALUATIONS, draw, evaluate_method, grade_search
from veriscale.learn.verifier import Verifier, VerifierConfig, load_verifier, train_verifier
from veriscale.policy.load import load_policy
from veriscale.policy.tiny import GPTPolicy, save_gpt
from veriscale.search import Pool, SearchPlan, budget_record, repeat_each, search_budgets, select
from veriscale.tasks.base import NEVER, Rollouts


def _search(pool: Pool, budgets: list[int], rule: str, **kw) -> list[dict]:
    """search_budgets with the pool's plan set to selection `rule`."""
    return search_budgets(dataclasses.replace(pool, plan=dataclasses.replace(pool.plan, selection=rule)), budgets, **kw)


def _subset(pool: Pool, idx: torch.Tensor) -> Pool:
    """The pool restricted to samples `idx` (1-D) of every problem."""
    rows = (torch.arange(len(pool.prompts))[:, None] * pool.N + idx[None]).flatten()  # (B * len(idx),)
    plan = dataclasses.replace(pool.plan, N=len(idx))
    return Pool(pool.task, pool.prompts, pool.rollouts.take(rows), plan, pool.scores[:, idx])


def _synthetic_pool(task, B=40, N=6, L=8, seed=0) -> Pool:
    """B problems x N random planted-task samples of width L; ~30% hold the target, ending at a
    random T <= the sample's length (random tokens may hold it too: T always comes from check)."""
    g = torch.Generator().manual_seed(seed)
    m, prompts = task.cfg.answer_len, task.prompts("test", B, 0)
    counts = torch.randint(1, L + 1, (B * N,), generator=g)
    tokens = torch.randint(task.vocab_size - 4, (B * N, L), generator=g)  # content and filler ids
    end = m + (torch.rand(B * N, generator=g) * (counts - m + 1).clamp(min=0)).long()  # in m..count
    plant = (torch.rand(B * N, generator=g) < 0.3) & (counts >= m)
    pos = torch.arange(L) - (end - m)[:, None]  # (B*N, L) position inside the planted target
    target = task.target(repeat_each(prompts, N)).gather(1, pos.clamp(0, m - 1))  # (B*N, L)
    tokens = torch.where(plant[:, None] & (pos >= 0) & (pos < m), target, tokens)
    mask = torch.arange(L) < counts[:, None]
    ro = Rollouts(torch.where(mask, tokens, task.pad), mask, counts)
    return Pool(task, prompts, ro, SearchPlan("oracle", N), torch.rand(B, N, L, generator=g))


def _first_success(pool: Pool) -> torch.Tensor:
    """(B, N) T of every full sample of the pool."""
    return pool.task.check(repeat_each(pool.prompts, pool.N), pool.rollouts).view(-1, pool.N)


def test_oracle_best_of_n_equals_unbiased_pass_at_k(task):
    pool = _synthetic_pool(task)
    n, k, L = pool.N, 3, pool.width
    T = _first_success(pool)
    assert 0 < (T <= L).float().mean() < 1  # a mix of correct and wrong samples
    subsets = [torch.tensor(s) for s in itertools.combinations(range(n), k)]
    # Averaged over all C(n, k) subsets, the oracle's success is pass@k exactly (its definition),
    # at the full budget k*L and at every truncated one.
    for H in (k, 2 * k, 5 * k, k * L):
        oracle = sum(_search(_subset(pool, s), [H], "oracle")[0]["success"] for s in subsets) / len(subsets)
        # unbiased pass@k = 1 - C(n - c, k) / C(n, k) from c correct of n samples, per problem
        estimate = sum(1 - math.comb(n - c, k) / math.comb(n, k) for c in (T <= H // k).sum(1).tolist()) / len(T)
        assert abs(oracle - estimate) < 1e-9, H


def test_answer_keys_take_the_last_complete_candidate(task):
    f, e, p = task.filler_base, task.eos, task.pad
    tokens = torch.tensor([[1, f, 2, 3, 4, f, 5, e],
                           [f, f, 5, f, 6, p, p, p],
                           [1, 2, 3, 4, 5, 6, 7, 0]])
    counts = torch.tensor([8, 5, 6])  # row 2 truncated to 6 tokens: two candidates of 3
    ro = Rollouts(tokens, torch.arange(8) < counts[:, None], counts)
    answers, valid = task.answer_keys(task.prompts("test", 3, 0), ro)
    assert valid.tolist() == [True, False, True]
    assert answers[0].tolist() == [2, 3, 4] and answers[2].tolist() == [4, 5, 6]


def test_selection_rules_by_hand():
    answers = torch.tensor([[[1, 1], [2, 2], [2, 2], [3, 3]]])
    valid = torch.tensor([[True, True, True, True]])
    correct = torch.tensor([[False, False, False, True]])
    scores = torch.tensor([[0.9, 0.2, 0.3, 0.1]])
    assert select("maj", correct, None, answers, valid).item() == 1  # answer (2, 2) has two votes
    assert select("bon", correct, scores, answers, valid).item() == 0
    assert select("wmaj", correct, scores, answers, valid).item() == 0  # 0.9 beats 0.2 + 0.3
    assert select("oracle", correct, scores, answers, valid).item() == 3
    assert select("maj", correct, None, answers, torch.tensor([[False, False, True, True]])).item() == 2


def test_no_method_spends_more_than_its_budget(task, tiny_gpt):
    policy = GPTPolicy(tiny_gpt, task)
    verifier = Verifier(policy).eval()
    torch.nn.init.normal_(verifier.value.weight, std=0.5)
    prompts = task.prompts("test", 16, 0)
    budgets = list(range(4, 25))
    for N in (1, 2, 4):
        for rule in ("bon", "maj", "wmaj", "oracle") + (("early_stop",) if N == 1 else ()):
            plan = SearchPlan(rule, N)  # the study's path: a draw, then grade_search
            ro = draw(policy, prompts, plan.samples, plan.sample_len(24), seed=1)
            for row in grade_search(plan, task, prompts, ro, budgets, verifier=verifier, threshold=0.7):
                assert row["tokens"] <= row["budget"]
                calls = row["verifier_calls"]
                if rule in ("bon", "wmaj"):
                    assert calls == N
                elif rule == "early_stop":
                    assert calls == row["tokens"]
                else:
                    assert calls == 0
    with pytest.raises(AssertionError, match="accounting"):
        budget_record(torch.tensor([3]), torch.tensor([9]), torch.tensor([0]), 8)


def test_search_return_charges_all_samples(task):
    prompts = task.prompts("test", 1, 0)
    f, p = task.filler_base, task.pad
    tokens = torch.tensor([[*task.target(prompts)[0].tolist(), p],  # correct, T = 3 (m = 3)
                           [f, f, f, f]])
    counts = torch.tensor([3, 4])
    pool = Pool(task, prompts, Rollouts(tokens, torch.arange(4) < counts[:, None], counts), SearchPlan("oracle", 2))
    assert _first_success(pool).tolist() == [[3, NEVER]]
    row = search_budgets(pool, [8])[0]
    assert row["success"] == 1.0 and row["tokens"] == 7.0 and row["J"] == 8 - 7 + 1  # T_eff = 3 + 4


def test_per_sample_accounting_scores_the_selected_trace(task):
    """Each sample gets H; the selected trace is scored by its own T; all drawn tokens are shown."""
    prompts = task.prompts("test", 1, 0)
    f, p = task.filler_base, task.pad
    tgt = task.target(prompts)[0].tolist()
    tokens = torch.tensor([[f, f, *tgt, p, p, p], [f] * 8])  # T = 5 (m = 3), and a trace that never answers
    counts = torch.tensor([5, 8])
    ro = Rollouts(tokens, torch.arange(8) < counts[:, None], counts)
    row = search_budgets(Pool(task, prompts, ro, SearchPlan("oracle", 2, "per_sample")), [8])[0]
    assert row["success"] == 1.0 and row["J"] == 8 - 5 + 1 and row["tokens"] == 13.0  # 13 <= N*H = 16
    # shared: the same pool gives each sample floor(8/2) = 4 tokens, too few for the answer at 5
    shared = search_budgets(Pool(task, prompts, ro, SearchPlan("oracle", 2)), [8])[0]
    assert shared["success"] == 0.0 and shared["tokens"] <= 8


def test_per_sample_pools_respect_n_times_h(task, tiny_gpt):
    prompts = task.prompts("test", 16, 0)
    policy = GPTPolicy(tiny_gpt, task)
    verifier = Verifier(policy).eval()
    for rule in ("bon", "maj", "wmaj", "oracle"):
        plan = SearchPlan(rule, 4, "per_sample")
        assert plan.sample_len(24) == 24 and plan.cap(24) == 96
        ro = draw(policy, prompts, plan.samples, plan.sample_len(24), seed=1)
        for row in grade_search(plan, task, prompts, ro, [4, 8, 16, 24], verifier=verifier):
            assert row["tokens"] <= 4 * row["budget"]


def test_majority_votes_for_final_candidates_not_for_credit(task):
    """A sample that writes the target and then another candidate votes for that last candidate,
    although the checker credits it: two identical wrong samples outvote two such samples."""
    prompts = task.prompts("test", 1, 0)
    f = task.filler_base
    tgt = task.target(prompts)[0]
    wrong = (tgt + 1) % task.cfg.vocab
    rows = [torch.cat([tgt, torch.tensor([f]), (tgt + 2) % task.cfg.vocab]),
            torch.cat([tgt, torch.tensor([f]), (tgt + 3) % task.cfg.vocab]),
            torch.cat([torch.tensor([f] * 4), wrong]), torch.cat([torch.tensor([f] * 4), wrong])]
    tokens = torch.stack(rows)
    ro = Rollouts(tokens, torch.ones_like(tokens, dtype=torch.bool), torch.full((4,), 7))
    row = search_budgets(Pool(task, prompts, ro, SearchPlan("maj", 4, "per_sample")), [7])[0]
    assert row["success"] == 0.0


@pytest.fixture
def runs(tmp_path, task, tiny_gpt):
    """A policy run (the random tiny GPT) and a verifier run on it (one training step, written by
    the verifier learner)."""
    policy = save_gpt(tmp_path / "policy", tiny_gpt, {"stage": "pretrain", "task": to_dict(task.cfg)})
    body = load_policy(policy)  # its own copy: the verifier's body trains in place
    cfg = load_config(VerifierConfig, None, ["n=8", "samples.val_prompts=8", "optim.steps=1", "min_positives=0"])
    verifier = train_verifier(body, task, cfg, tmp_path / "verifier")
    return policy, verifier


def test_every_method_on_the_same_prompts_and_budgets(runs):
    policy_dir, verifier_dir = runs
    policy = load_policy(policy_dir)
    task = policy.task
    verifier = load_verifier(verifier_dir, task)
    prompts = task.prompts("test", 8, 3)
    for method in EVALUATIONS:
        rows = evaluate_method(method, policy, task, prompts, [8, 16, 24], verifier=verifier, samples=2, N=4, seed=3)
        assert [r["budget"] for r in rows] == [8, 16, 24] and all(r["n"] == 16 for r in rows)
        assert all(r["tokens"] <= r["budget"] and r["method"] == method for r in rows)
    with pytest.raises(ValueError, match="needs a verifier"):
        evaluate_method("bon", policy, task, prompts, [8])


def test_cli_evaluate_prints_one_table(runs):
    policy, verifier = runs
    res = CliRunner().invoke(main, ["evaluate", "--policy", str(policy), "--verifier", str(verifier),
                                    "--method", "base,bon", "--method", f"sft={policy}", "--budgets", "8,16",
                                    "--prompts", "8", "--samples-per-prompt", "2", "--samples-per-problem", "2"])
    assert res.exit_code == 0, res.output
    assert "verifier calls" in res.output and "sft:policy" in res.output
    assert sum(line.strip().startswith(("base", "bon", "sft")) for line in res.output.splitlines()) == 6
    res = CliRunner().invoke(main, ["evaluate", "--policy", str(policy), "--method", "wmaj", "--budgets", "8,16"])
    assert res.exit_code == 2 and "--verifier" in res.output


@pytest.mark.parametrize("rule", ["oracle", "maj", "bon", "wmaj"])
def test_a_per_sample_pool_serves_the_shared_accounting_as_a_pool_drawn_at_h_over_n(task, rule):
    """search_pool = "one" (study/jobs.py): the shared accounting read off a pool of H tokens a
    sample gives, at every budget, the records of that pool's samples cut to H/N tokens, i.e. of
    a pool drawn at H/N (a sample of H tokens cut to its first H/N is a sample of H/N)."""
    wide = _synthetic_pool(task, N=4, L=16)
    H_max = wide.N * 4  # the shared pool of H_max holds 4 tokens a sample
    assert wide.plan.pool_width(H_max, shared_pool=False) == 4 and wide.plan.pool_width(H_max, shared_pool=True) == H_max
    narrow = Pool(task, wide.prompts, wide.rollouts.truncate(4), wide.plan, wide.scores[..., :4])
    budgets = [wide.N * k for k in (1, 2, 3, 4)]
    assert H_max == max(budgets) and narrow.width == 4 < wide.width
    assert _search(wide, budgets, rule) == _search(narrow, budgets, rule)


def test_a_pool_of_more_samples_serves_a_smaller_N_as_its_first_samples(task):
    """grade_search(drawn=N_max) with a plan of N equals grading a pool assembled sample by
    sample from the first N samples of each problem, under every rule and budget."""
    big = _synthetic_pool(task, N=4)
    scores = big.scores.reshape(len(big.rollouts), -1)  # (B*N_max, L), as Verifier.score returns
    for N in (1, 2, 4):
        keep = [b * 4 + j for b in range(len(big.prompts)) for j in range(N)]
        ref = Rollouts(torch.stack([big.rollouts.tokens[k] for k in keep]),
                       torch.stack([big.rollouts.mask[k] for k in keep]),
                       torch.stack([big.rollouts.counts[k] for k in keep]))
        for rule in ("bon", "maj", "wmaj", "oracle"):
            plan = SearchPlan(rule, N, "shared")
            fast = grade_search(plan, task, big.prompts, big.rollouts, [4, 8], scores=scores, drawn=4)
            slow = grade_search(plan, task, big.prompts, ref, [4, 8], scores=torch.stack([scores[k] for k in keep]))
            assert fast == slow, (rule, N)
            assert all(r["tokens"] <= H for r, H in zip(fast, [4, 8]))
