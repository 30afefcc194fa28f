"""Bases of controlled heterogeneity for a text policy (learn/shape.py, study/level_bases.py): a
level's trace is built only from its prompt's own samples, `none` is always the shortest correct
answer alone while `high` spreads the first success over up to 1 + failures attempts, every
level trains on the same number of trace tokens, a shaped base loads as the base of its level's
world, and a study with `shaped_bases` expands into one shaping draw and one base per level that
every job of the level starts from."""

import random
import statistics

import pytest

from test_text_learners import _labelled_samples, _policy
from veriscale.config import ConfigError, from_dict
from veriscale.learn.shape import LevelShape, ShapeConfig, level_trace, shape_base, shaped_texts, within_budget
from veriscale.policy.base import read_meta
from veriscale.study.grid import expand
from veriscale.study.jobs import DiagnoseJob
from veriscale.study.learners import shaped_base_summary
from veriscale.study.level_bases import ShapedBaseJob
from veriscale.study.spec import study_from_dict

BRIDGE, CHECK = " W1 ", " W2 "
ATTEMPTS = [("bad one", False), ("good long answer", True), ("bad two", False), ("ok", True), ("bad three", False),
            ("fine answer", True), ("bad four", False)]


def _first_success_at(trace: str) -> int:
    """Characters before the first correct attempt of a trace built from ATTEMPTS."""
    good = [t for t, ok in ATTEMPTS if ok]
    return min(trace.index(g) for g in good if g in trace)


def test_level_traces_are_built_from_the_prompts_own_samples_and_shape_the_first_success():
    none, high = LevelShape(0, 0, True), LevelShape(3, 2, False)
    at = {"none": [], "high": []}
    for seed in range(200):
        for name, shape in (("none", none), ("high", high)):
            trace = level_trace(ATTEMPTS, shape, random.Random(seed), BRIDGE, CHECK)
            pieces = trace.replace(CHECK, BRIDGE).split(BRIDGE)
            assert all(p in dict(ATTEMPTS) for p in pieces)  # only this prompt's own samples
            fails = [p for p in pieces if not dict(ATTEMPTS)[p]]
            assert len(fails) <= shape.failures and len(pieces) - len(fails) <= 1 + shape.checks
            assert not any(dict(ATTEMPTS)[p] for p in pieces[:len(fails)])  # failures come first
            at[name].append(_first_success_at(trace))
    assert set(at["none"]) == {0} and level_trace(ATTEMPTS, none, random.Random(0), BRIDGE, CHECK) == "ok"
    assert statistics.pstdev(at["high"]) > 5 and max(at["high"]) > 20  # 0 to 3 failures before it
    assert level_trace([("x", False)], high, random.Random(0), BRIDGE, CHECK) is None


def test_the_token_budget_takes_whole_traces_in_one_seeded_order():
    texts, lengths = ["a", None, "b", "c", "d"], [3, 0, 5, 2, 4]
    kept = within_budget(texts, lengths, 6, seed=1)
    total = sum(n for t, n in zip(kept, lengths) if t)
    assert total >= 6 and total - max(lengths) < 6 and kept == within_budget(texts, lengths, 6, seed=1)
    with pytest.raises(ValueError, match="shape.tokens"):
        within_budget(texts, lengths, 100, seed=1)


def test_every_level_trains_on_the_same_tokens_and_loads_as_its_worlds_base(lm_dir, gym_task, tmp_path):
    from veriscale.study.world import World
    policy = _policy(lm_dir)
    # four samples a prompt: two right and two wrong in a prompt-dependent order
    s = _labelled_samples(policy, gym_task, lambda i: [(True, False, False, True), (False, True, True, False),
                                                       (False, False, True, True)][i % 3], n=16, n_val=6)
    cfg = from_dict(ShapeConfig, {"prompts": 16, "r": 4, "val_prompts": 6, "data_seed": 0,
                                  "sft": {"eval_batch": 8, "optim": {"steps": 2, "batch_size": 4}}})
    budgets, used = set(), {}
    for level in ("none", "low", "high"):
        train, val, budget = shaped_texts(policy, s, cfg, level)
        budgets.add(budget)
        used[level] = sum(len(policy.encode_completion(t)) for t in train if t)
        assert budget <= used[level] < budget + max(len(policy.encode_completion(t)) for t in train if t)
        if level == "none":  # the smallest level's total is the budget: all its traces, each one attempt
            assert all(t and cfg.sft_config().bridge not in t for t in train) and used[level] == budget
    assert len(budgets) == 1
    out = shape_base(_policy(lm_dir), gym_task, s, cfg, "high", tmp_path / "high")
    meta = read_meta(out)
    assert (meta["shaped_level"], meta["shape_tokens"], meta["shape_budget"]) == ("high", used["high"], budget)
    assert meta["val_nll_after"] <= meta["val_nll_before"]
    built = shaped_base_summary(out)  # what the level's diagnosis record carries
    assert (built["level"], built["tokens"]) == ("high", used["high"])
    assert len(built["data_T"]) == built["training_traces"] and all(t is not None for t in built["data_T"])
    world = World("gym:basic_arithmetic", gym_task.cfg, "shaped_base-x", f"hf:{lm_dir}", None)
    base = world.base_policy(lambda _: out)
    assert base.text and read_meta(out)["stage"] == "sft"


def _shaped_study(lm_dir, **kw):
    return study_from_dict({"name": "shaped", "policy": f"hf:{lm_dir}", "task": "gym:basic_arithmetic",
                            "budgets": [24, 32], "n": [8], "seeds": [0], "eval_prompts": 4, "samples_per_problem": 2,
                            "shaped_bases": True, "heterogeneity": ["none", "high"], "diagnose_prompts": 3,
                            "diagnose_samples": 2, "methods": ["base", "sft_search", "bon"], "vf_reference": "sft_search",
                            "shape": {"prompts": 12, "r": 2}, "gym": {"reserve_share": 0.3}, **kw})


def test_a_shaped_study_starts_every_job_of_a_level_from_its_base(lm_dir):
    jobs = expand(_shaped_study(lm_dir))
    bases = {j.level: j for j in jobs if isinstance(j, ShapedBaseJob)}
    assert set(bases) == {"none", "high"}
    shaping = {j.samples for j in bases.values()}
    assert len(shaping) == 1  # one shaping draw serves every level
    (draw,) = [j for j in jobs if j.id in shaping]
    assert (draw.n, draw.seed, draw.cfg.r, draw.world.base) == (12, 1000, 2, None)
    # the shaping draws from the reserved share; every learner, draw and evaluation from the rest
    assert draw.world.task_cfg.reserved and all(b.world.task_cfg.reserved for b in bases.values())
    assert not any(j.world.task_cfg.reserved for j in jobs if j.id not in shaping and not isinstance(j, ShapedBaseJob))
    ids = {b.id: level for level, b in bases.items()}
    for j in jobs:
        if j.id in shaping or isinstance(j, ShapedBaseJob):
            continue
        assert j.world.base in ids and j.world.base in j.deps
        if hasattr(j, "point"):  # an evaluation or diagnosis reads its own level's base
            assert ids[j.world.base] == j.point.heterogeneity
    assert sorted(j.point.heterogeneity for j in jobs if isinstance(j, DiagnoseJob)) == ["high", "none"]


@pytest.mark.parametrize("kw, field", [({"heterogeneity": ["custom"]}, "heterogeneity"),
                                       ({"shape": {"sft": {"stepz": 1}}}, "shape.sft.stepz"),
                                       ({"shape": {"high": {"failures": -1}}}, "shape.high.failures")])
def test_shaped_study_errors_name_the_field(lm_dir, kw, field):
    with pytest.raises(ConfigError, match=field):
        _shaped_study(lm_dir, **kw)


def test_shaped_bases_need_a_reserved_share(lm_dir):
    with pytest.raises(ConfigError, match="gym.reserve_share"):
        _shaped_study(lm_dir, gym={"reserve_share": 0.0})
    with pytest.raises(ConfigError, match="reserved"):
        _shaped_study(lm_dir, gym={"reserve_share": 0.3, "reserved": True})


def test_shaped_bases_are_for_text_tasks():
    with pytest.raises(ConfigError, match="shaped_bases"):
        study_from_dict({"shaped_bases": True})
