"""reasoning-gym tasks: prompts, the template split of gsm_symbolic, strict 0/1 grading."""

import pytest
import torch

from veriscale.config import ConfigError, from_dict
from veriscale.tasks.base import NEVER, Rollouts
from veriscale.tasks.gym import INSTRUCTIONS, GymConfig, GymTask, hash_split


def _rollouts(texts):
    L = max(len(t) for t in texts)
    counts = torch.tensor([len(t) for t in texts])
    return Rollouts(tokens=torch.zeros(len(texts), L, dtype=torch.long), mask=torch.arange(L)[None] < counts[:, None],
                    counts=counts, texts=texts, offsets=[list(range(1, len(t) + 1)) for t in texts])


def test_basic_arithmetic_prompts_are_easy_reproducible_and_split():
    task = GymTask(GymConfig())
    a, b = task.prompts("test", 20, seed=3), task.prompts("test", 20, seed=3)
    assert a == b
    for p in a:
        assert p.text.startswith("Calculate ") and p.text.endswith(INSTRUCTIONS["basic_arithmetic"])
        assert p.text.count("+") + p.text.count(" - ") == 1 and "(" not in p.text
    train = {p.text for p in task.prompts("train", 40, seed=3)}
    assert not train & {p.text for p in a}  # hash split: a question is in one split only


def test_gsm_symbolic_is_split_by_template():
    task = GymTask(GymConfig(name="gsm_symbolic", test_share=0.2))
    assert len(task.test_templates) == 17  # of 85
    test = task.prompts("test", 30, seed=0)
    train = task.prompts("train", 60, seed=0)
    assert {p.group for p in test} <= {f"template {t}" for t in task.test_templates}
    assert not {p.group for p in test} & {p.group for p in train}
    assert all(p.gold.lstrip("-").isdigit() for p in test)


def test_strict_grading_and_first_success():
    task = GymTask(GymConfig(name="chain_sum"))
    p = task.prompts("test", 1, seed=0)[0]
    gold = int(p.gold)
    texts = [f"{gold} is close. Final answer: {gold}.<eos>",  # right
             f"{gold} = {gold}. Final answer: {gold + 1}.<eos>",  # well-formed but wrong: 0, not 0.01
             f"Final answer: {gold}.",  # cut at the budget: it might have gone on to "{gold}.5"
             f"{gold} = {gold}<eos>"]  # no cue, no answer
    T = task.check([p] * 4, _rollouts(texts))
    assert T[0] == texts[0].index(".<eos>") and T.tolist()[1:] == [NEVER] * 3


def test_config_errors():
    with pytest.raises(ConfigError, match="gym: reasoning-gym rejects"):
        GymTask(GymConfig(operators="+%"))
    with pytest.raises(ValueError, match="split"):
        GymTask(GymConfig()).prompts("validation", 2, 0)


def test_hash_split_shares():
    texts = [f"q{i}" for i in range(2000)]
    share = sum(hash_split(t, 0.2, 0) == "test" for t in texts) / len(texts)
    assert 0.17 < share < 0.23
    assert all(hash_split(t, 1.0, 0) == "test" for t in texts[:50])
    assert all(hash_split(t, 0.0, 0) == "train" for t in texts[:50])


def test_validation_prompts_and_gold_expert_traces():
    """What SFT and the verifier read of a text task: validation prompts are other training
    prompts (disjoint from the given ones and from the test split), and the expert is each
    problem's gold worked solution, which the task's own checker grades right."""
    task = GymTask(GymConfig(grade_workers=1))
    train = task.prompts("train", 20, seed=0)
    val = task.validation_prompts(train, 10, 7919)
    assert len(val) == 10 and val == task.validation_prompts(train, 10, 7919)
    test = {p.text for p in task.prompts("test", 40, seed=0)}
    assert not {p.text for p in val} & ({p.text for p in train} | test)
    traces = task.expert_traces(train, seed=0)
    assert traces == [p.solution for p in train] and all(traces)
    T = task.check(train, _rollouts([t + "<eos>" for t in traces]))
    assert (T < NEVER).all()
    with pytest.raises(ValueError, match="homogeneous"):
        task.expert_traces(train, seed=0, homogeneous=True)
    # a method without training data (majority vote) validates beside no training prompts
    assert task.prompts("train", 0, seed=0) == []
    alone = task.validation_prompts(task.prompts("train", 0, seed=0), 10, 7919)
    assert len(alone) == 10 and not {p.text for p in alone} & test


def test_prompts_are_distinct_and_a_too_narrow_task_says_so():
    wide = GymTask(GymConfig(max_digits=2))
    test = wide.prompts("test", 200, 0)
    assert len({p.text for p in test}) == 200  # 200 held-out prompts are 200 different questions
    narrow = GymTask(GymConfig())  # two one-digit terms, + and -: a few hundred questions in all
    with pytest.raises(ValueError, match="distinct test problems.*widen the task"):
        narrow.prompts("test", 200, 0)


def test_seeds_draw_apart_from_each_other_not_one_item_shifted():
    # reasoning-gym builds item i of stream s from s + i: used as they are, seeds 0 and 1 would share
    # all but one training prompt; the stride puts each seed on its own stream
    shifted = GymTask(GymConfig(max_digits=2, seed_stride=1))
    apart = GymTask(GymConfig(max_digits=2))
    same = lambda t: len({p.text for p in t.prompts("train", 64, 0)} & {p.text for p in t.prompts("train", 64, 1)})  # noqa: E731
    assert same(shifted) >= 60
    assert same(apart) <= 20  # what repeats is the task's few one-digit questions, drawn by chance


def test_the_reserved_share_is_apart_from_the_training_and_test_splits():
    texts = [f"q{i}" for i in range(4000)]
    parts = [hash_split(t, 0.2, 0, 0.3) for t in texts]
    assert 0.27 < parts.count("reserved") / len(texts) < 0.33
    assert [p == "test" for p in parts] == [hash_split(t, 0.2, 0) == "test" for t in texts]  # test split unchanged
    learners = GymTask(GymConfig(max_digits=2, reserve_share=0.3))
    shaping = GymTask(GymConfig(max_digits=2, reserve_share=0.3, reserved=True))
    shaped = {p.text for p in shaping.prompts("train", 200, 1000)}
    drawn = {p.text for s in (0, 1, 2) for p in learners.prompts("train", 100, s)}
    test = {p.text for p in learners.prompts("test", 100, 0)}
    assert len(shaped) == 200 and not shaped & drawn and not shaped & test
    assert test == {p.text for p in shaping.prompts("test", 100, 0)}


@pytest.mark.parametrize("kw, field", [({"reserve_share": 0.9}, "reserve_share"), ({"reserved": True}, "reserved"),
                                       ({"name": "gsm_symbolic", "reserve_share": 0.3}, "reserve_share"),
                                       ({"seed_stride": 0}, "seed_stride")])
def test_reserve_and_stride_errors_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        from_dict(GymConfig, kw)
