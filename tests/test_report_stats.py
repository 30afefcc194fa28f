"""The study report on synthetic records with known laws: the fits recover the planted exponents
with seed-bootstrap intervals, non-positive points are listed, the diagonal n = c*H is found,
and summary.json carries every number the HTML states."""

import json
import math
import re
from fractions import Fraction
from html import escape

import pytest

from veriscale.config import to_dict
from veriscale.atomic import write_json_atomic
from veriscale.study.analysis import Report
from veriscale.study.grid import expand
from veriscale.study.report import write_report
from veriscale.study.spec import study_from_dict
from veriscale.study.store import write_record
from veriscale.theory import diagonal

M = 4  # answer length: J*_H = H - M + 1


def _laws(c: dict, H: int, N: int) -> dict:
    """Planted metrics of one run at budget H. VF suboptimality J(expert) - J(sft) = 2 H n^-1/2 and
    VB suboptimality J* - J(bon) = 30 sqrt(H) / n, each times a per-seed factor (which leaves the
    slope of the seed means exact); rl_verifier at level none returns (H - 20)/4 tokens more than
    sft, so its gap is negative at H = 8 and 16."""
    het, n, method, f = c["heterogeneity"], c["n"], c["method"], 1.0 + 0.1 * c["seed"]
    jstar = H - M + 1
    j_exp = jstar if het == "none" else jstar - 0.2 * H
    sd = 0.0 if het == "none" else 0.5 * H**0.5
    j = {"base": 0.3 * jstar, "expert": j_exp}.get(method, 0.5 * jstar)  # other methods: a flat 0.5 J*
    if method in ("sft", "rl_verifier"):
        j = j_exp - 2 * H * n**-0.5 * f
        if method == "rl_verifier":
            j += (H - 20) / 4 if het == "none" else 0.0
    elif method == "bon":
        j = jstar - 30 * H**0.5 / n * f
    tokens = {"shared": H, "per_sample": N * H}.get(c["accounting"], 0.5 * H)
    s = 1.0 if method == "expert" else min(1.0, max(0.0, j / jstar))
    return {"budget": H, "n": 64, "J": j, "J_norm": j / H, "J_norm_lo": j / H - 0.02, "J_norm_hi": j / H + 0.02,
            "success": s, "success_lo": s - 0.05, "success_hi": s + 0.05, "tokens": tokens,
            "T_mean": M + 0.2 * H, "T_std": sd if method == "expert" else 0.2 * H, "R_std": 1.0, "verifier_calls": 0.0}


def _make(tmp_path, **kw):
    study = study_from_dict({"name": "synthetic", "budgets": [8, 16, 32, 64], "n": [16, 32, 64, 128, 256],
                             "heterogeneity": ["none", "high"], "seeds": [0, 1, 2], "samples_per_problem": 4,
                             "methods": ["base", "expert", "sft", "bon", "rl_verifier"],
                             **{"planted": {"answer_len": M}, **kw}})
    write_json_atomic(tmp_path / "study.json", to_dict(study))
    for job in (j for j in expand(study) if j.kind == "eval"):
        c = job.config
        if c["method"] == "diagnose":
            band = {"value": 0.2, "lo": 0.18, "hi": 0.22}
            metrics = [{"budget": c["budgets"][0], "sigma_over_H": band, "pass_rate": band, "eps": [0.0, 0.25, 1.0],
                        "eps_ref": 0.25, "mean_c": {k: [0.5, 0.3, 0.1] for k in ("value", "lo", "hi")},
                        "verdict": "YES (synthetic)"}]
        else:
            metrics = [_laws(c, H, study.samples_per_problem) for H in c["budgets"]]
        learner = {"sft": {"best_step": 9, "steps_planned": 10, "test_nll_before": 3.0, "test_nll_after": 2.0}} \
            if c["method"] == "sft" else {}
        data = {"prompts": c["n"] or 0, "expert_traces": c["n"] if c["method"] == "sft" else 0}
        write_record(tmp_path, job, {"status": "ok", "metrics": metrics, "data": data, "learner": learner})
    return study


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    _make(out)
    html = write_report(out).read_text()
    return out, html, json.loads((out / "summary.json").read_text())


def test_suboptimality_fits_recover_planted_exponents(reported):
    _, _, s = reported
    fits = {(f["heterogeneity"], f["kind"], f["method"]): f["fit"] for f in s["suboptimality"]}
    for het in ("none", "high"):
        vf, vb = fits[(het, "VF", "sft")], fits[(het, "VB", "bon:shared")]
        assert vf["alpha"] == vf["lo"] == pytest.approx(-0.5) and vf["hi"] == pytest.approx(-0.5)
        assert vb["alpha"] == pytest.approx(-1.0) and vb["seeds"] == 3 and vb["boot_too_few"] == 0
    assert ("none", "VB", "rl_outcome") not in fits  # only data-matched VB methods are read against 1/n


def test_non_positive_gap_points_are_listed_not_dropped(reported):
    _, html, s = reported
    gap = next(g for g in s["gap_vs_H"] if (g["setting"], g["heterogeneity"], g["method"]) ==
               ("fixed_n", "none", "rl_verifier"))
    assert [(p["x"], round(p["mean"], 9)) for p in gap["fit"]["nonpositive"]] == [(8, -3.0), (16, -1.0)]
    assert gap["fit"]["points"] == 2 and gap["fit"]["ci_note"] == "fewer than 3 positive means: no CI"
    assert "2 non-positive mean(s) excluded: x = 8: -3, x = 16: -1" in html


def test_diagonal_gap_uses_the_grid_pairs(reported):
    out, _, s = reported
    assert s["study"]["diagonal"] == {"c": "2", "pairs": [[8, 16], [16, 32], [32, 64], [64, 128]]}
    diag = [g for g in s["gap_vs_H"] if g["setting"] == "diagonal"]
    assert diag and all([(p["H"], p["n"]) for p in g["points"]] == [(8, 16), (16, 32), (32, 64), (64, 128)]
                         for g in diag)
    assert (out / "fig_c2_gap_vs_H_diagonal.png").read_bytes()[:4] == b"\x89PNG"


def test_tables_and_html_state_the_summary(reported):
    out, html, s = reported
    assert set(s) >= {"study", "levels", "clones", "suboptimality", "gap_vs_H", "learners", "results", "findings"}
    assert re.search(r"<h2>(.*?)</h2>", html).group(1) == "The paper's claims on this grid"  # the first screen
    assert html.index("<table class=verdicts>") < html.index("<details")
    assert [r["claim"] for r in s["verdicts"]] == ["1", "2", "3a", "3b", "4", "5"]
    for link in re.findall(r"<a href='#([\w]+)'>", html):  # every verdict's link lands on the page
        assert f"id='{link}'" in html
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert html.count("data:image/png;base64,") == len(pngs) and "fig_f_best_of_n_accounting.png" in pngs
    high = next(r for r in s["levels"] if r["heterogeneity"] == "high")
    assert high["expert_sigma_over_H"]["mean"] == pytest.approx(0.5 * 64**0.5 / 64)
    assert high["spread"] == "l ~ U{0..floor(0.25·H^1)} = U{0..16} at H = 64"
    clone = next(r for r in s["clones"] if r["heterogeneity"] == "high")
    assert clone["nll_before"]["mean"] == 3.0 and clone["target_success"]["mean"] == 1.0
    unfit = [f for f in s["findings"] if "no fit (" in f]
    for f in s["findings"]:
        assert (escape(f) in html) != (f in unfit)  # every fitted finding stated, unfitted ones in one line
    assert f"<li>{len(unfit)} power-law fits have fewer than 2 positive seed means" in html


def test_one_seed_reports_the_within_run_interval_and_no_bootstrap(tmp_path):
    study = _make(tmp_path, seeds=[0])
    rep = Report(study, tmp_path)
    iv = rep.iv("high", 256, "sft", 64, "J_norm")
    assert iv["how"] == "within-run" and iv["hi"] - iv["lo"] == pytest.approx(0.04)
    sub = next(f for f in rep.suboptimality() if f["kind"] == "VF")
    assert sub["fit"]["alpha"] == pytest.approx(-0.5) and sub["fit"]["ci_note"] == "one seed: no seed-bootstrap CI"


def test_horizon_mode_fits_sigma_against_beta(tmp_path):
    study = _make(tmp_path, mode="horizon", n=[16, 32], seeds=[0, 1], planted={"answer_len": M, "spread_exponent": 0.5})
    fits = {(f["heterogeneity"], f["method"]): f for f in Report(study, tmp_path).sigma_vs_H()}
    high = fits[("high", "expert")]
    assert high["fit"]["alpha"] == pytest.approx(0.5) and high["configured_beta"] == 0.5
    none = fits[("none", "expert")]["fit"]
    assert math.isnan(none["alpha"]) and len(none["nonpositive"]) == 4  # sigma = 0 at every H: nothing to log


def test_diagonal_picks_the_ratio_with_most_pairs():
    assert diagonal([8, 16, 32, 64, 128], [16, 32, 64, 128, 256]) == \
        (Fraction(2), [(8, 16), (16, 32), (32, 64), (64, 128), (128, 256)])
    assert diagonal([8, 16], [10, 100]) == (None, [])


def test_learners_that_never_left_their_start_are_named_per_seed(tmp_path):
    """Seed 1's verifier kept its start (so bon and rl_verifier read a constant score), its SFT
    kept its start and its RL reward never changed; seed 0's learners moved. Only seed 1 is named."""
    study = study_from_dict({"name": "stuck", "budgets": [8, 16], "n": [16], "heterogeneity": ["high"],
                             "seeds": [0, 1], "samples_per_problem": 4, "methods": ["base", "sft", "bon", "rl_verifier"],
                             "planted": {"answer_len": M}})
    write_json_atomic(tmp_path / "study.json", to_dict(study))
    for job in (j for j in expand(study) if j.kind == "eval" and j.config["method"] != "diagnose"):
        c, stuck = job.config, job.config["seed"] == 1
        verifier = {"best_step": -1 if stuck else 19, "select": "loss",
                    "curve": [{"step": s, "heldout_loss": 0.3, "heldout_auc_final": 0.5} for s in (-1, 9, 19, 29)]}
        rewards = [0.25] * 3 if stuck else [0.25, 0.5, 0.75]
        learner = {"sft": {"sft": {"best_step": -1 if stuck else 9, "steps_planned": 10}},
                   "bon": {"verifier": verifier},
                   "rl_verifier": {"verifier": verifier,
                                   "rl": {"curve": [{"step": i, "reward": r} for i, r in enumerate(rewards)]}},
                   }.get(c["method"], {})
        write_record(tmp_path, job, {"status": "ok", "metrics": [_laws(c, H, 4) for H in c["budgets"]],
                                     "data": {}, "learner": learner})
    rep = Report(study, tmp_path)
    rep.unmoved()
    assert len(rep.findings) == 3 and all("seed 1" in f and "seed 0" not in f for f in rep.findings)
    sft, rl, ver = sorted(rep.findings, key=lambda f: ("SFT" not in f, "RL's" not in f))
    assert "sft (" in sft and "kept its start" in sft
    assert "reward was the same at every step (0.25)" in rl
    assert "kept its untrained start" in ver and "in 30 steps" in ver
    assert "bon:per_sample, bon:shared, bon:shared:fixed, rl_verifier read it" in ver
