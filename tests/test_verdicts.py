"""The verdict rule and the prediction on synthetic records with closed-form metrics: a world that
behaves as the theory says gets "supported", its mirror image "contradicted", and a grid without
the needed cells "not testable"; the predicted gap matches its formula."""

import math

import pytest

from veriscale.atomic import write_json_atomic
from veriscale.config import ConfigError, to_dict
from veriscale.predict import check, gap, lift, predict
from veriscale.study.analysis import Report
from veriscale.study.grid import expand
from veriscale.study.spec import study_from_dict
from veriscale.study.store import write_record
from veriscale.study.verdicts import (CONTRADICTED, INCONCLUSIVE, SUPPORTED, UNTESTABLE, claims, combine, decide,
                                      prediction_check)

M = 4  # answer length


def _metrics(c: dict, H: int, theory: bool) -> dict:
    """One budget's metrics. The expert's return sd is 0 (level none) or H/4 (high); VF loses
    sd·8/sqrt(n) tokens to it; bon returns J* - 40/n; the base J*/2. In the mirror world
    (theory=False) VF loses more at n = 128 than at 32 and with the homogeneous expert, bon gets
    worse with n, and bon's success falls below SFT's."""
    het, n, method, f = c["heterogeneity"], c["n"], c["method"], 1.0 + 0.1 * c["seed"]
    jstar = H - M + 1
    sd = 0.0 if het == "none" else H / 4
    j = {"base": jstar / 2, "expert": jstar}.get(method)
    if method == "sft":
        loss = (sd if theory else H / 4 - sd + 1) * 8 * (n if theory else 4096 / n) ** -0.5
        j = jstar - loss * f
    elif method == "bon":
        j = jstar - (40 / n if theory else n / 40) * f
    success = j / jstar if theory or method != "bon" else 0.1 * f
    return {"budget": H, "n": 256, "J": j, "J_norm": j / H, "J_norm_lo": 0.0, "J_norm_hi": 1.0, "success": success,
            "success_lo": 0.0, "success_hi": 1.0, "tokens": H, "T_mean": M, "T_std": sd,
            "R_std": sd if method == "expert" else H / 8, "verifier_calls": 0.0}


def _diagnosis(H: int, share: float) -> dict:
    b = lambda v: {"value": v, "lo": v - 0.02, "hi": v + 0.02}  # noqa: E731
    return {"budget": H, "sigma_over_H": b(0.3), "pass_rate": b(0.5), "eps": [0.0, 0.25], "eps_ref": 0.25,
            "c0": 0.1, "margin": "sqrt", "mean_c": {k: [0.5, 0.4] for k in ("value", "lo", "hi")},
            "share_anti": {k: [share, share + d] for k, d in (("value", 0), ("lo", -0.05), ("hi", 0.05))},
            "verdict": "synthetic"}


def _report(tmp_path, theory: bool = True, **kw) -> Report:
    study = study_from_dict({"name": "v", "budgets": [8, 64], "n": [32, 128], "heterogeneity": ["none", "high"],
                             "seeds": [0, 1, 2], "methods": ["base", "expert", "sft", "bon"],
                             "accounting": ["shared"], "planted": {"answer_len": M}, **kw})
    write_json_atomic(tmp_path / "study.json", to_dict(study))
    for job in (j for j in expand(study) if j.kind == "eval"):
        c = job.config
        metrics = ([_diagnosis(c["budgets"][0], 0.8 if theory else 0.1)] if c["method"] == "diagnose"
                   else [_metrics(c, H, theory) for H in c["budgets"]])
        write_record(tmp_path, job, {"status": "ok", "metrics": metrics, "data": {}, "learner": {}})
    return Report(study, tmp_path)


def _verdicts(rep: Report) -> dict[str, str]:
    s = {"suboptimality": rep.suboptimality(), "gap_vs_H": rep.gaps()}
    return {r["claim"]: r["verdict"] for r in claims(rep, s)}


def test_decide_and_combine_follow_the_written_rule():
    iv = lambda lo, hi, k=3: {"mean": (lo + hi) / 2, "lo": lo, "hi": hi, "k": k}  # noqa: E731
    assert decide(iv(0.1, 2.0)) == SUPPORTED and decide(iv(0.1, 2.0), -1) == CONTRADICTED
    assert decide(iv(-1.0, 2.0)) == INCONCLUSIVE and decide(iv(math.nan, math.nan, 1)) == INCONCLUSIVE
    assert decide(None) == decide({"k": 0, "lo": math.nan, "hi": math.nan}) == UNTESTABLE
    assert combine([SUPPORTED, UNTESTABLE]) == SUPPORTED and combine([SUPPORTED, CONTRADICTED]) == CONTRADICTED
    assert combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE and combine([UNTESTABLE]) == UNTESTABLE


def test_a_world_that_follows_the_theory_is_supported(tmp_path):
    v = _verdicts(_report(tmp_path))
    # no diagonal n = c*H with two points on budgets (8, 64) x n (32, 128): 3b is not testable
    assert v == {"1": SUPPORTED, "2": SUPPORTED, "3a": SUPPORTED, "3b": UNTESTABLE, "4": SUPPORTED, "5": SUPPORTED}


def test_its_mirror_image_is_contradicted(tmp_path):
    v = _verdicts(_report(tmp_path, theory=False))
    assert v["1"] == v["2"] == v["4"] == v["5"] == CONTRADICTED


def test_a_grid_without_the_cells_is_not_testable(tmp_path):
    rep = _report(tmp_path, budgets=[64], n=[128], heterogeneity=["high"], methods=["base", "sft", "bon"])
    rows = {r["claim"]: r for r in claims(rep, {"suboptimality": [], "gap_vs_H": rep.gaps()})}
    assert all(rows[c]["verdict"] == UNTESTABLE for c in ("1", "2", "3a", "3b"))
    assert "one budget" in rows["3a"]["measured"] and "one data size" in rows["2"]["measured"]


def test_predicted_gap_matches_its_formula():
    b = lambda v, w=0.0: {"value": v, "lo": v - w, "hi": v + w}  # noqa: E731
    assert lift(10.0, 0.5, 4, 0.5) == pytest.approx(0.5 * 10 * (1 - 0.5**4))
    g = gap(64, b(20.0, 1.0), b(10.0), b(50.0, 2.0), b(16.0), b(0.5), n=64, N=4, margin=0.5, kappa=1.0)
    mid = 20 + lift(10, 0.5, 4, 0.5) - (50 - 16 / 8)
    # base J +- 1 and the data's J +- 2 move the gap by 1 and 2: in quadrature, sqrt(5) either way
    assert g["value"] == pytest.approx(mid) and g["hi"] - mid == pytest.approx(5**0.5) == mid - g["lo"]
    p = predict([{"H": H, "base_J": b(H / 2), "base_sigma": b(H / 4), "vf_J": b(H / 4), "vf_sigma": b(0.0)}
                 for H in (8, 64)], b(1.0), n=64, N=4, margin=1.0, kappa=1.0)
    assert p["sign"] == "+" and p["growth_sign"] == "+" and p["gaps"][-1]["value"] == pytest.approx(32 + 16 - 16)
    assert (check("+", "+"), check("+", "-"), check("?", "+")) == ("hit", "miss", "undecided")


def test_prediction_check_reads_base_expert_and_diagnosis(tmp_path):
    rows = {r["setting"]: r for r in prediction_check(_report(tmp_path))}
    high = rows["level high"]
    # base J*/2 plus a lift, against an expert at J*: VF predicted ahead; measured bon - sft > 0: a miss
    assert high["predicted_sign"] == "VF ahead" and high["measured_sign"] == "VB ahead"
    assert high["sign_check"] == "miss" and high["method"] == "bon:shared"


def test_records_without_per_problem_outcomes_keep_the_t_interval(tmp_path):
    """These records carry no T_per_problem: every difference is the t-interval over the 3 seeds,
    and the rows say so."""
    rep = _report(tmp_path)
    s = {"suboptimality": rep.suboptimality(), "gap_vs_H": rep.gaps()}
    rows = {r["claim"]: r["measured"] for r in claims(rep, s)}
    for c in ("1", "2", "3a", "5"):
        assert "95% t-interval over 3 seeds, paired by seed" in rows[c] and "bootstrap" not in rows[c]


def _shaped_report(tmp_path, theory: bool, **kw) -> Report:
    """A text study with two shaped bases whose diagnoses measure σ/H 0.1 (none) and 0.4 (high):
    bon leads search-trace SFT by 10 tokens on the heterogeneous base and 2 on the other (the
    mirror world: the other way round)."""
    study = study_from_dict({"name": "t", "policy": "hf:nowhere", "task": "gym:basic_arithmetic", "shaped_bases": True,
                             "gym": {"reserve_share": 0.3}, "heterogeneity": ["none", "high"], "budgets": [32, 64], "n": [16], "seeds": [0, 1, 2],
                             "methods": ["base", "sft_search", "bon"], "vf_reference": "sft_search",
                             "accounting": ["shared"], "samples_per_problem": 2, **kw})
    write_json_atomic(tmp_path / "study.json", to_dict(study))
    for job in (j for j in expand(study) if j.kind == "eval"):
        c = job.config
        if c["method"] == "diagnose":
            d = _diagnosis(c["budgets"][0], 0.8)
            d["sigma_over_H"] = {k: (0.1 if c["heterogeneity"] == "none" else 0.4) + e
                                 for k, e in (("value", 0), ("lo", -0.02), ("hi", 0.02))}
            metrics = [d]
        else:
            lead = 10 if (c["heterogeneity"] == "high") == theory else 2
            metrics = [{**_metrics({**c, "method": "base"}, H, True),
                        "J": H / 2 + (lead * (1 + 0.1 * c["seed"]) if c["method"] == "bon" else 0)}
                       for H in c["budgets"]]
        write_record(tmp_path, job, {"status": "ok", "metrics": metrics, "data": {}, "learner": {}})
    return Report(study, tmp_path)


@pytest.mark.parametrize("theory, verdict", [(True, SUPPORTED), (False, CONTRADICTED)])
def test_shaped_bases_judge_claim_1_by_the_gap_on_the_more_heterogeneous_base(tmp_path, theory, verdict):
    from veriscale.study.figures import fig_vs_sigma
    rep = _shaped_report(tmp_path, theory)
    row = next(r for r in claims(rep, {}) if r["claim"] == "1")
    assert row["verdict"] == verdict and "base high (σ/H 0.4" in row["measured"], row
    path, _ = fig_vs_sigma(rep)
    assert path.name == "fig_i_vs_sigma.png" and path.stat().st_size > 0


def test_the_headline_vb_method_is_named_before_the_run_not_picked_on_test(tmp_path):
    # bon leads search-trace SFT on every base; wmaj does not. Named as the headline, wmaj is
    # what claim 1 reads, though bon has the larger gap on the test records.
    rep = _shaped_report(tmp_path, True, methods=["base", "sft_search", "bon", "wmaj"], vb_reference="wmaj:shared")
    row = next(r for r in claims(rep, {}) if r["claim"] == "1")
    assert row["measured"].startswith("wmaj:shared − sft_search") and row["verdict"] != SUPPORTED, row
    (tmp_path / "first").mkdir()
    first = _shaped_report(tmp_path / "first", True, methods=["base", "sft_search", "wmaj", "bon"])
    assert first.study.headline_vb == "wmaj:shared"  # '' = the first candidate of `methods`


def test_a_headline_vb_method_the_study_lacks_names_the_field():
    with pytest.raises(ConfigError, match="vb_reference.*valid: bon:shared"):
        study_from_dict({"methods": ["base", "sft", "bon"], "accounting": ["shared", "per_sample"],
                         "vb_reference": "rl_outcome"})
    with pytest.raises(ConfigError, match="vb_reference"):
        study_from_dict({"methods": ["base", "sft", "bon"], "accounting": ["shared", "per_sample"],
                         "vb_reference": "bon:per_sample"})


def test_a_per_sample_method_is_charged_its_N_samples_in_the_token_multiplier(tmp_path):
    # the fake records give bon the same success under both accountings; per-sample draws 4 samples
    # of H tokens, so VF's tokens to match it are divided by 4·H, not H
    rep = _report(tmp_path, accounting=["shared", "per_sample"], samples_per_problem=4)
    mult = {(m["heterogeneity"], m["method"], m["axis"], m["at"]): m["multiplier"] for m in rep.multipliers()}
    pairs = [(k, mult[(k[0], "bon:per_sample", *k[2:])]) for k in mult if k[1] == "bon:shared" and mult[k]]
    assert pairs and all(per == pytest.approx(mult[k] / (4 if k[2] == "tokens" else 1)) for k, per in pairs)
    assert {k[2] for k, _ in pairs} == {"tokens", "data"}
