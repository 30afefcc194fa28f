"""The verdicts' interval on synthetic per-problem outcomes: pairing by prompt narrows a difference
to its closed form, a success rate's interval stays inside [0, 1] where the t-interval over seeds
leaves it, the four cells of a gap's growth are paired on every seed and prompt, the seed and
prompt parts of the variance add with the t-quantile over seeds, and records without
per-problem outcomes keep the t-interval over seeds."""

import math

import numpy as np
import pytest
from scipy import stats

from veriscale.atomic import write_json_atomic
from veriscale.config import to_dict
from veriscale.study.analysis import Report
from veriscale.study.grid import expand
from veriscale.study.resample import contrast, crossed_interval, outcomes
from veriscale.study.spec import study_from_dict
from veriscale.study.store import write_record
from veriscale.study.verdicts import claims

Z = stats.norm.ppf(0.975)


def _row(T: list, H: int) -> dict:
    """A budget row with its per-problem first-success indices and the means they imply."""
    R = [0 if t is None else H - t + 1 for t in T]
    return {"budget": H, "T_per_problem": list(T), "J": sum(R) / len(R),
            "success": sum(t is not None for t in T) / len(T)}


def _old(row: dict) -> dict:
    """The same row as an older record writes it, without per-problem outcomes."""
    return {k: v for k, v in row.items() if k != "T_per_problem"}


def test_outcomes_are_the_records_return_and_success_per_prompt():
    r = _row([2, None, 8, 1], 8)
    assert outcomes(r, "J", 1).tolist() == [7, 0, 1, 8] and outcomes(r, "success", 1).tolist() == [1, 0, 1, 1]
    assert outcomes(r, "J_norm", 2).tolist() == [7 / 16, 9 / 16]  # two problems per prompt: their mean
    assert outcomes(_old(r), "J", 1) is None


def test_pairing_by_prompt_narrows_a_difference():
    """One seed, the same prompts for both methods: a is b one token sooner on every prompt, so the
    paired difference of returns is exactly 1 in every resample; drawn independently, the two
    sides' prompt variances would add (closed form 2·z·sqrt((var a + var b)/P) > 0)."""
    rng = np.random.default_rng(3)
    H, P = 32, 400
    Tb = rng.integers(2, H + 1, P)
    a, b = _row((Tb - 1).tolist(), H), _row(Tb.tolist(), H)
    iv = contrast([(1.0, {0: a}), (-1.0, {0: b})], "J", 1)
    assert (iv["mean"], iv["lo"], iv["hi"], iv["how"]) == (1.0, 1.0, 1.0, "crossed")
    xa, xb = outcomes(a, "J", 1), outcomes(b, "J", 1)
    assert 2 * Z * math.sqrt((xa.var() + xb.var()) / P) > 2  # about 2.4 tokens here
    # prompt difficulty shared but not identical: the paired width is the closed form of the
    # per-prompt differences' sd, narrower than the unpaired one
    noisy = _row(np.clip(Tb - 1 + rng.integers(-3, 4, P), 1, H).tolist(), H)
    iv = contrast([(1.0, {0: noisy}), (-1.0, {0: b})], "J", 1)
    d, xn = outcomes(noisy, "J", 1) - xb, outcomes(noisy, "J", 1)
    assert iv["hi"] - iv["lo"] == pytest.approx(2 * Z * d.std() / math.sqrt(P), rel=0.15)
    assert iv["hi"] - iv["lo"] < 0.5 * 2 * Z * math.sqrt((xn.var() + xb.var()) / P)


def test_a_success_interval_stays_inside_0_1():
    """Three seeds at success 0.98, 1.0, 1.0 (50 prompts): mean ± t·sd/sqrt(3) reaches past 1; the
    interval over seeds and prompts is cut to the range a success rate can take."""
    P = 50
    rows = {0: _row([None] + [1] * (P - 1), 8), 1: _row([1] * P, 8), 2: _row([3] * P, 8)}
    t = contrast([(1.0, {s: _old(r) for s, r in rows.items()})], "success", 1)
    v = np.array([0.98, 1.0, 1.0])
    assert t["how"] == "t" and t["hi"] == pytest.approx(v.mean() + stats.t.ppf(0.975, 2) * v.std(ddof=1) / 3**0.5)
    assert t["hi"] > 1
    iv = contrast([(1.0, rows)], "success", 1)
    assert iv["how"] == "crossed" and iv["mean"] == pytest.approx(v.mean())
    assert 0 <= iv["lo"] < iv["mean"] and iv["hi"] == 1.0


def test_the_four_cells_of_a_gap_growth_are_paired_by_seed_and_prompt():
    """Per prompt p, the gap at H1 is 1 + z_p and at H0 z_p: each gap varies over prompts, their
    difference is 1 on every prompt and seed, so its interval is exactly [1, 1]."""
    rng = np.random.default_rng(5)
    P, H0, H1 = 200, 8, 32
    z = rng.integers(0, 3, P)
    cells = {}
    for s in (0, 1, 2):
        t1, t0 = rng.integers(1, 20, P), rng.integers(1, 5, P)
        cells[s] = (_row(t1.tolist(), H1), _row((t1 + 1 + z).tolist(), H1),
                    _row(t0.tolist(), H0), _row((t0 + z).tolist(), H0))
    cell = lambda i: {s: c[i] for s, c in cells.items()}  # noqa: E731
    gap1 = contrast([(1.0, cell(0)), (-1.0, cell(1))], "J", 1)
    growth = contrast([(1.0, cell(0)), (-1.0, cell(1)), (-1.0, cell(2)), (1.0, cell(3))], "J", 1)
    assert gap1["hi"] - gap1["lo"] > 0.1
    assert (growth["mean"], growth["lo"], growth["hi"]) == pytest.approx((1.0, 1.0, 1.0))


def test_seed_and_prompt_variances_add_with_the_t_quantile_over_seeds():
    """X[s, p] = a_s + b_p: the interval's half-width is t(S - 1) · sqrt(var(a)/S + var(b)/P) by hand."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=3), rng.normal(size=100)
    iv = crossed_interval(a[:, None] + b[None], -10.0, 10.0)
    half = stats.t.ppf(0.975, 2) * math.sqrt(a.var(ddof=1) / 3 + b.var(ddof=1) / 100)
    assert (iv["lo"], iv["hi"]) == pytest.approx((a.mean() + b.mean() - half, a.mean() + b.mean() + half))
    one = crossed_interval((a[:1, None] + b[None]), -10.0, 10.0)  # one seed: prompts only, t(P - 1)
    assert one["hi"] - one["mean"] == pytest.approx(stats.t.ppf(0.975, 99) * b.std(ddof=1) / 10)


def test_records_without_outcomes_keep_the_t_interval():
    """Any cell's row without T_per_problem: the t-interval over seeds of the per-seed difference."""
    a = {s: _row([1 + s, 2, None], 8) for s in (0, 1, 2)}
    b = {s: _row([3, 3 + s, 4], 8) for s in (0, 1, 2)}
    per_seed = [a[s]["J"] - b[s]["J"] for s in (0, 1, 2)]
    for old_a in (a, {**a, 1: _old(a[1])}):
        b_old = {s: _old(r) for s, r in b.items()} if old_a is a else b
        iv = contrast([(1.0, old_a), (-1.0, b_old)], "J", 1)
        half = stats.t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / 3**0.5
        assert iv["how"] == "t" and iv["mean"] == pytest.approx(np.mean(per_seed))
        assert (iv["lo"], iv["hi"]) == pytest.approx((np.mean(per_seed) - half, np.mean(per_seed) + half))
    assert contrast([(1.0, a), (-1.0, {5: b[0]})], "J", 1) is None  # no seed in common


def test_a_report_states_its_interval_in_its_rows(tmp_path):
    """bon answers at once on every problem, sft never succeeds: claim 5's success gap is exactly 1
    on every seed and prompt, and the row names its interval with its seeds and prompts."""
    study = study_from_dict({"name": "r", "budgets": [8, 16], "n": [32], "heterogeneity": ["high"], "seeds": [0, 1],
                             "methods": ["base", "sft", "bon"], "accounting": ["shared"], "eval_prompts": 6,
                             "eval_samples": 2, "planted": {"answer_len": 4}})
    write_json_atomic(tmp_path / "study.json", to_dict(study))
    for job in (j for j in expand(study) if j.kind == "eval" and j.config["method"] != "diagnose"):
        T = [4] * 12 if job.config["method"] == "bon" else [None] * 12
        write_record(tmp_path, job, {"status": "ok", "metrics": [_row(T, H) for H in job.config["budgets"]],
                                     "data": {}, "learner": {}})
    r5 = {r["claim"]: r for r in claims(Report(study, tmp_path), {})}["5"]
    assert r5["verdict"] == "supported" and "= 1 [1, 1]" in r5["measured"]
    assert "95% t-interval over 2 seeds and 6 prompts, paired by seed and prompt" in r5["measured"]
