"""No ground truth leaks into a selection: with the task's checker replaced by one that credits
nothing, or one that credits random traces, every selection but `oracle` picks the same samples
(bon, maj, wmaj) and stops at the same tokens (early_stop), on the planted task and on a text task.
Only the correctness of what was selected may change."""

import dataclasses

import pytest
import torch

from veriscale import grading, search
from veriscale.grading import TextProblem
from veriscale.search import Pool, SearchPlan, search_budgets
from veriscale.tasks.base import NEVER, repeat_each
from veriscale.tasks.planted import PlantedConfig, PlantedTask

from text_fakes import TextTask, text_rollouts

RULES = ("bon", "maj", "wmaj")


def credit_nothing(prompts, rollouts) -> torch.Tensor:
    return torch.full((len(rollouts),), NEVER, dtype=torch.long)


def credit_random(prompts, rollouts) -> torch.Tensor:
    """A random half of the traces, each at a random token of it."""
    g = torch.Generator().manual_seed(len(rollouts) * 31 + int(rollouts.counts.sum()))
    at = (torch.rand(len(rollouts), generator=g) * rollouts.counts).long() + 1
    return torch.where(torch.rand(len(rollouts), generator=g) < 0.5, at, NEVER)


def selections(pool: Pool, budgets: list[int], rules, monkeypatch) -> list:
    """Every sample index `search.select` picks and every row's tokens `search.budget_record` is
    charged, over search_budgets of each rule (spied, so the selection itself is compared)."""
    seen: list = []
    select, record = search.select, search.budget_record

    def spy_select(rule, *args):
        j = select(rule, *args)
        seen.append((rule, j.tolist()))
        return j

    def spy_record(T, tokens, calls, H, cap=None):
        seen.append((H, tokens.tolist(), calls.tolist()))
        return record(T, tokens, calls, H, cap)

    monkeypatch.setattr(search, "select", spy_select)
    monkeypatch.setattr(search, "budget_record", spy_record)
    for rule in rules:
        search_budgets(dataclasses.replace(pool, plan=dataclasses.replace(pool.plan, selection=rule)), budgets)
    monkeypatch.undo()
    return seen


def assert_no_leak(task, make_pool, budgets, monkeypatch, rules=RULES) -> None:
    truth = selections(make_pool(), budgets, rules, monkeypatch)
    assert truth
    for fake in (credit_nothing, credit_random):
        monkeypatch.setattr(task, "check", fake)
        assert selections(make_pool(), budgets, rules, monkeypatch) == truth, fake.__name__


@pytest.fixture
def planted() -> PlantedTask:
    return PlantedTask(PlantedConfig(vocab=8, prompt_len=3, answer_len=3, horizon=24, test_prompts=64, q=0.4))


@pytest.mark.parametrize("accounting", ["shared", "per_sample"])
def test_planted_selections_do_not_read_the_checker(planted, accounting, monkeypatch):
    B, N, H = 24, 4, 24
    prompts = planted.prompts("test", B, 0)
    L = H // N if accounting == "shared" else H
    g = torch.Generator().manual_seed(1)
    # base-like traces: the teacher's attempts (several, some wrong), cut at L tokens
    ro = planted.teacher(repeat_each(prompts, N), g, budget=L)
    scores = torch.rand(B, N, L, generator=g)
    assert_no_leak(planted, lambda: Pool(planted, prompts, ro, SearchPlan("bon", N, accounting), scores), [8, 16, 24], monkeypatch)


def test_planted_early_stop_does_not_read_the_checker(planted, monkeypatch):
    B, H = 32, 24
    prompts = planted.prompts("test", B, 0)
    g = torch.Generator().manual_seed(2)
    ro = planted.teacher(prompts, g, budget=H)
    scores = torch.rand(B, 1, H, generator=g)
    pool = lambda: Pool(planted, prompts, ro, SearchPlan("early_stop", 1), scores)  # noqa: E731
    assert_no_leak(planted, pool, [8, 24], monkeypatch, rules=("early_stop",))


SAMPLES = ["Final| answer:| 7|<eos>", "Final| answer:| 8|<eos>", "So| 7.| Final| answer:| 8|<eos>",
           "Final| answer:| 7.0|<eos>", "Final| answer:| 7|\nWait|,| Final| answer:| 8|<eos>", "I| give| up|<eos>"]


def test_text_selections_do_not_read_the_checker_or_the_judge(monkeypatch):
    task, N = TextTask(), len(SAMPLES)
    problems = [TextProblem(text="3 + 4?", gold="7"), TextProblem(text="4 + 4?", gold="8")]
    ro = text_rollouts(SAMPLES * 2)
    scores = torch.rand(2, N, ro.tokens.shape[1], generator=torch.Generator().manual_seed(3))
    make = lambda: Pool(task, problems, ro, SearchPlan("bon", N, "per_sample"), scores)  # noqa: E731
    truth = selections(make(), [4, 9], RULES, monkeypatch)
    for judge in (lambda pred, gold: False, lambda pred, gold: hash(pred) % 2 == 0):
        # the judges run in forked workers, which inherit the replaced ones
        monkeypatch.setitem(grading.JUDGES, "exact", judge)
        for fake in (credit_nothing, credit_random):
            monkeypatch.setattr(task, "check", fake)
            assert selections(make(), [4, 9], RULES, monkeypatch) == truth
