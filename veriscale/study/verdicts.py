"""The verdict on each claim of the paper (SPEC §1, "What the theory predicts"), and the check of
the diagnosis's prediction, from the numbers `analysis.Report` computed from stored records.

The rule, written once (docs/verdicts.md): each claim is read as a measured difference whose
sign the theory predicts, with a 95% interval paired by seed and by prompt: a t-interval over seeds
and prompts where the records keep per-problem outcomes, else a t-interval over seeds
(resample.py; each row says which). Interval entirely on the predicted side of 0: supported;
entirely on the other side: contradicted; containing 0: inconclusive; the grid or the records
lack what the difference needs: not testable on this grid (and the row says what is missing). A
claim read on several parts is contradicted when any part is, supported when every testable part
is, not testable when none is, inconclusive otherwise. The rates (slopes -1/2, -1, 1/2) are
reported beside the verdict, not judged: a slope's interval needs three grid points.

Which cells: H_max and the largest n; the most heterogeneous level (the largest measured sd of
the expert's return at H_max; on the LLM track the base with the largest diagnosed σ/H, or its
one task); the VB method with the largest mean return gap over the VF reference there among
those drawing at most H tokens a problem (the recipe a practitioner would pick at VF's tokens;
every method's gap is in the report's tables); for claim 2, the data-matched VB method (bon, wmaj, rl_verifier)
with the largest return there; for claim 5, verifier best-of-N (`bon`) under the shared
accounting (its N samples share H, so it draws at most the tokens the VF policy may), its N
chosen per H on validation prompts as VF's forcing is (study/search_choice.py). A method's
fixed-setting twin (`:fixed`) is reported beside it, never chosen as the headline.
"""

from __future__ import annotations

import math

import torch

from veriscale.diagnose import DiagnoseConfig
from veriscale.predict import GROWTH_WORDS, SIGN_WORDS, band_of, check, predict, sign
from veriscale.rewards import budget_metrics
from veriscale.study.analysis import DATA_MATCHED_VB, Report
from veriscale.study.resample import words
from veriscale.tasks.base import NEVER
from veriscale.theory import fmt, interval, num

SUPPORTED, CONTRADICTED, INCONCLUSIVE, UNTESTABLE = ("supported", "contradicted", "inconclusive",
                                                     "not testable on this grid")
KAPPA = 1.0  # log|Pi| of the prediction's VF loss (veriscale/predict.py; ours)


def decide(iv: dict | None, direction: int = 1) -> str:
    """The rule for one measured difference whose predicted sign is `direction`."""
    if iv is None or iv["k"] == 0:
        return UNTESTABLE
    lo, hi = iv["lo"], iv["hi"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE  # one seed without per-problem outcomes: no interval
    lo, hi = (lo, hi) if direction > 0 else (-hi, -lo)
    return SUPPORTED if lo > 0 else CONTRADICTED if hi < 0 else INCONCLUSIVE


def combine(parts: list[str]) -> str:
    testable = [p for p in parts if p != UNTESTABLE]
    if not testable:
        return UNTESTABLE
    if CONTRADICTED in testable:
        return CONTRADICTED
    return SUPPORTED if all(p == SUPPORTED for p in testable) else INCONCLUSIVE


def diff(a: tuple, b: tuple) -> list[tuple[float, tuple]]:
    """The contrast terms (Report.contrast) of cell a minus cell b, each (het, n, label, H)."""
    return [(1.0, a), (-1.0, b)]


def minus(x: list, y: list) -> list[tuple[float, tuple]]:
    """The contrast terms of x - y: a difference of two differences (four cells)."""
    return x + [(-w, c) for w, c in y]


def order_by_heterogeneity(rep: Report) -> list[str]:
    """The levels from the least to the most heterogeneous expert (seed-mean sd of its return at
    H_max), or on the LLM track base (its diagnosis's σ/H at H_max); the study's order where the
    records hold neither."""
    def sd(het):
        if not rep.didactic:
            d = rep.diag.get((het, rep.Hmax))
            return d["sigma_over_H"]["value"] if d else math.nan
        v = rep.values(het, rep.nmax, "expert", rep.Hmax, "R_std")
        return sum(v.values()) / len(v) if v else math.nan
    sds = {h: sd(h) for h in rep.hets}
    if not all(math.isfinite(v) for v in sds.values()):
        return list(rep.hets)
    return sorted(rep.hets, key=sds.__getitem__)


CLAIM2_ORDER = ("rl_verifier_pess", "rl_verifier", "wmaj_pess", "wmaj", "bon_pess", "bon")


def headline_vb(rep: Report, het: str) -> str | None:
    """The study's headline VB method (`vb_reference`), named before it ran (never the method with
    the largest gap on the test records, which would bias the gap upward), when it has records
    beside the VF reference at (H_max, n_max)."""
    m = rep.study.headline_vb
    return m if m and rep.gap_values(het, rep.nmax, m, rep.vf, rep.Hmax) else None


def rate(fit: dict | None, theory: str) -> str:
    """A fitted exponent with its seed-bootstrap CI, short, beside the theory's."""
    if not fit or not math.isfinite(fit["alpha"]):
        return ""
    ci = f" [{fit['lo']:.2f}, {fit['hi']:.2f}]" if math.isfinite(fit["lo"]) else " (no CI)"
    return f"; fitted slope {fit['alpha']:.2f}{ci}, theory {theory}"


def row(claim: str, title: str, theory: str, parts: list[tuple[str, str]], figure: str, note: str = "",
        ivs: tuple = ()) -> dict:
    """One table row: `parts` are (verdict, measured text); `ivs` the intervals the text states,
    whose kinds the row names."""
    notes = [t for t in (note, *dict.fromkeys(words(iv) for iv in ivs if iv)) if t]
    return {"claim": claim, "title": title, "theory": theory, "verdict": combine([v for v, _ in parts]),
            "measured": "; ".join(t for _, t in parts) + (f" ({'; '.join(notes)})" if notes else ""),
            "figure": figure}


def vf_suboptimality(rep: Report) -> dict:
    """Claim 1: J(expert) - J(VF) larger for the more heterogeneous expert, smaller with more data."""
    title, theory = "VF suboptimality vs σ and n", "grows with the expert's σ, shrinks like σ·n^-1/2"
    if not rep.didactic:
        return vf_against_vb_by_level(rep, title)
    sub = lambda het, n: diff((het, n, "expert", rep.Hmax), (het, n, rep.vf, rep.Hmax))  # noqa: E731
    levels = order_by_heterogeneity(rep)
    lo_het, hi_het = levels[0], levels[-1]
    parts, ivs = [], []
    if len(levels) < 2:
        parts.append((UNTESTABLE, "σ: one level"))
    else:
        d = rep.contrast("J", minus(sub(hi_het, rep.nmax), sub(lo_het, rep.nmax)))
        ivs.append(d)
        parts.append((decide(d), f"J(expert) − J({rep.vf}), σ: level {hi_het} − level {lo_het} = "
                                 f"{fmt(d) if d else 'n/a'} tokens at n = {rep.nmax}"))
    if len(rep.ns) < 2:
        parts.append((UNTESTABLE, "n: one data size"))
    else:
        d = rep.contrast("J", minus(sub(hi_het, rep.ns[0]), sub(hi_het, rep.nmax)))
        ivs.append(d)
        parts.append((decide(d), f"n: n = {rep.ns[0]} − n = {rep.nmax} = {fmt(d) if d else 'n/a'} tokens, "
                                 f"level {hi_het}"))
    return row("1", title, theory, parts, "fig_d_suboptimality_vs_n", f"H = {rep.Hmax}", ivs)


def vf_against_vb_by_level(rep: Report, title: str) -> dict:
    """Claim 1 on the LLM track, which has no expert process and so no J(expert): with bases of
    controlled heterogeneity (`shaped_bases`), VF falls further behind VB on the more
    heterogeneous base: the VB − VF return gap at the most heterogeneous base (by its measured
    σ/H) minus at the least, at (n_max, H_max), for the headline VB method of the former."""
    theory = "VF loses more to VB on a more heterogeneous base (as on the paper's 3B/8B bases)"
    levels = order_by_heterogeneity(rep)
    m = headline_vb(rep, levels[-1]) if levels else None
    if len(levels) < 2 or m is None:
        what = ("one base: the LLM track has no expert process to clone, so no J(expert); shaped_bases "
                "compares bases of several heterogeneity levels") if len(levels) < 2 else f"no VB and {rep.vf} records"
        return row("1", title, theory, [(UNTESTABLE, what)], "fig_i_vs_sigma")
    lo, hi = levels[0], levels[-1]
    gap = lambda het: diff((het, rep.nmax, m, rep.Hmax), (het, rep.nmax, rep.vf, rep.Hmax))  # noqa: E731
    d = rep.contrast("J", minus(gap(hi), gap(lo)))
    sig = lambda het: num(rep.diag[(het, rep.Hmax)]["sigma_over_H"]["value"]) if (het, rep.Hmax) in rep.diag \
        else "n/a"  # noqa: E731
    return row("1", title, theory, [(decide(d), f"{m} − {rep.vf}: gap on base {hi} (σ/H {sig(hi)}) − on base {lo} "
                                                f"(σ/H {sig(lo)}) = {fmt(d) if d else 'n/a'} tokens")],
               "fig_i_vs_sigma", f"n = {rep.nmax}, H = {rep.Hmax}", (d,))


def vb_suboptimality(rep: Report, s: dict) -> dict:
    """Claim 2: J*_H - J(VB) of a data-matched VB method shrinks with n."""
    title, theory = "VB suboptimality vs n", "shrinks like 1/n (fast rate)"
    het = order_by_heterogeneity(rep)[-1]
    # the first data-matched VB method in an order fixed before any record, not the best on test:
    # the policy optimised against the learned verifier first (the algorithm of the theory), then
    # the votes with N fixed per sample, which always read the verifier, before those sharing H,
    # whose N chosen on validation may be 1 (no verifier, nothing learned from the n traces)
    methods = sorted((m for m in rep.vb_chosen if m.startswith(DATA_MATCHED_VB)),
                     key=lambda m: (CLAIM2_ORDER.index(m.split(":")[0]), not m.endswith(":per_sample")))
    if not rep.didactic:
        return row("2", title, theory, [(UNTESTABLE, "J*_H is unknown on the LLM track")], "fig_d_suboptimality_vs_n")
    if len(rep.ns) < 2 or not methods:
        what = "one data size" if len(rep.ns) < 2 else "no data-matched VB method (bon, wmaj, rl_verifier)"
        return row("2", title, theory, [(UNTESTABLE, what)], "fig_d_suboptimality_vs_n")

    m = methods[0]
    d = rep.contrast("J", diff((het, rep.nmax, m, rep.Hmax), (het, rep.ns[0], m, rep.Hmax)))
    fit = next((f["fit"] for f in s.get("suboptimality", [])
                if (f["heterogeneity"], f["kind"], f["method"]) == (het, "VB", m)), None)
    slope = rate(fit, "-1") if len(rep.ns) >= 3 else ""
    return row("2", title, theory, [(decide(d), f"{m}, level {het}: suboptimality at n = {rep.ns[0]} − at n = "
                                                f"{rep.nmax} = {fmt(d) if d else 'n/a'} tokens{slope}")],
               "fig_d_suboptimality_vs_n", f"H = {rep.Hmax}", (d,))


def gap_growth(rep: Report, s: dict, setting: str) -> dict:
    """Claim 3: the VB - VF return gap grows with H, at fixed n or on the diagonal n = c·H."""
    fixed = setting == "fixed_n"
    title = "VB − VF gap vs H, " + ("fixed n" if fixed else "n ∝ H")
    theory = "grows with H" if fixed else "grows like H^1/2"
    figure = "fig_c_gap_vs_H" if fixed else "fig_c2_gap_vs_H_diagonal"
    claim = "3a" if fixed else "3b"
    het = order_by_heterogeneity(rep)[-1]
    pairs = [(H, rep.nmax) for H in rep.budgets] if fixed else rep.pairs
    m = headline_vb(rep, het)
    if len(pairs) < 2 or m is None:
        what = ("one budget" if fixed else f"no diagonal n = c·H with two points (budgets {rep.budgets}, "
                f"n {rep.ns})") if len(pairs) < 2 else f"no VB method and {rep.vf} records"
        return row(claim, title, theory, [(UNTESTABLE, what)], figure)
    (H0, n0), (H1, n1) = pairs[0], pairs[-1]
    gap = lambda H, n: diff((het, n, m, H), (het, n, rep.vf, H))  # noqa: E731
    d = rep.contrast("J", minus(gap(H1, n1), gap(H0, n0)))
    fit = next((g["fit"] for g in s.get("gap_vs_H", [])
                if (g["setting"], g["heterogeneity"], g["method"]) == (setting, het, m)), None)
    at1 = rep.contrast("J", gap(H1, n1))
    text = (f"{m} − {rep.vf}, {rep.where(het)}: gap at H = {H1} − at H = {H0} = {fmt(d) if d else 'n/a'} tokens "
            f"(gap at H = {H1}: {fmt(at1) if at1 else 'n/a'})"
            + (rate(fit, "1/2" if not fixed else "> 0") if len(pairs) >= 3 else ""))
    return row(claim, title, theory, [(decide(d), text)], figure, "n = " + (f"{rep.nmax}" if fixed else f"{rep.c}·H"),
               (d, at1))


def base_condition(rep: Report) -> dict:
    """Claim 4: the base policy is heterogeneous and anti-concentrated (its diagnosis records)."""
    title, theory = "base heterogeneous and anti-concentrated", "σ/H and the anti-concentrated share clearly above 0"
    t = DiagnoseConfig()
    parts = []
    for het in rep.hets:
        d = rep.diag.get((het, rep.Hmax))
        if d is None:
            parts.append((UNTESTABLE, f"{rep.where(het)}: no diagnosis record"))
            continue
        i = d["eps"].index(d["eps_ref"])
        p, s = d["pass_rate"], d["sigma_over_H"]
        a = {k: d["share_anti"][k][i] for k in ("value", "lo", "hi")} if "share_anti" in d else None
        where = f"{rep.where(het)}: σ/H {num(s['value'])} [{num(s['lo'])}, {num(s['hi'])}]"
        if p["lo"] < t.pass_min:
            parts.append((UNTESTABLE, f"{rep.where(het)}: pass rate {num(p['value'])} too low to judge"))
        elif a is None:
            parts.append((UNTESTABLE, f"{where}; the record lacks the anti-concentrated share"))
        else:
            v = (SUPPORTED if s["lo"] >= t.sigma_min and a["lo"] >= t.share_min else
                 CONTRADICTED if s["hi"] < t.sigma_min or a["hi"] < t.share_min else INCONCLUSIVE)
            low = (f", median σ/H {num(d['sigma_median_over_H']['value'])}, {d['q_low']:g}-quantile of c over "
                   f"prompts {num(d['low_c']['value'][i])}") if "low_c" in d else ""
            parts.append((v, f"{where}, share with c(ε = {d['eps_ref']:g}) ≥ {d['c0']:g}: {num(a['value'])} "
                             f"[{num(a['lo'])}, {num(a['hi'])}]{low}"))
    return row("4", title, theory, parts, "levels",
               f"thresholds σ/H ≥ {t.sigma_min:g}, share ≥ {t.share_min:g}, pass rate ≥ {t.pass_min:g}; "
               "interval over prompts")


def search_vs_forced(rep: Report) -> dict:
    """Claim 5: verifier best-of-N beats the VF policy capped at the same budget (success@H)."""
    title, theory = "VB search vs VF with budget forcing, matched tokens", "best-of-N with a verifier ahead"
    het = order_by_heterogeneity(rep)[-1]
    m = "bon:shared"
    if m not in rep.labels or rep.vf not in rep.labels:
        return row("5", title, theory, [(UNTESTABLE, f"records lack {m} or {rep.vf}")], "fig_f_best_of_n_accounting")
    H, n = rep.Hmax, rep.nmax
    d = rep.contrast("success", diff((het, n, m, H), (het, n, rep.vf, H)))
    tok = lambda lab: num(interval(rep.values(het, n, lab, H, "tokens").values())["mean"])  # noqa: E731
    fixed, fixed_n = f"{rep.vf}:fixed", f"{m}:fixed"
    forced = ("truncated at H" if rep.vf not in rep.study.forced_methods else
              "budget-forced, its forcing chosen on validation prompts" if fixed in rep.labels else "budget-forced")
    notes = []  # the fixed settings beside the validated ones: readings, not the verdict
    if fixed in rep.labels:
        df = rep.contrast("success", diff((het, n, m, H), (het, n, fixed, H)))
        notes.append(f"against {fixed} (cap at H, extension before {rep.study.extend_share} H): "
                     f"{fmt(df) if df else 'n/a'}")
    if fixed_n in rep.labels:
        chosen = sorted({r.get("search", {}).get("N") for r in rep.cells[(het, n, m, H)].values()} - {None})
        df = rep.contrast("success", diff((het, n, fixed_n, H), (het, n, rep.vf, H)))
        notes.append(f"N chosen on validation: {', '.join(map(str, chosen)) or 'n/a'} (over seeds); {fixed_n} "
                     f"(N = {rep.study.samples_per_problem}) − {rep.vf}: {fmt(df) if df else 'n/a'}")
    note = "; ".join(notes)
    return row("5", title, theory, [(decide(d), f"success@{H} {m} − {rep.vf} ({forced}) = {fmt(d) if d else 'n/a'}, "
                                                f"{rep.where(het)}, n = {n}; tokens drawn {tok(m)} vs {tok(rep.vf)}")],
               "fig_f_best_of_n_accounting", note=note, ivs=(d,))


def claims(rep: Report, s: dict) -> list[dict]:
    """The verdict table: one row per claim, in SPEC order (`s`: the report's summary, for the fits)."""
    return [vf_suboptimality(rep), vb_suboptimality(rep, s), gap_growth(rep, s, "fixed_n"),
            gap_growth(rep, s, "diagonal"), base_condition(rep), search_vs_forced(rep)]


def side(rep: Report, het: str, label: str, H: int) -> tuple[dict, dict] | None:
    """(J, pooled sd of R_H) of a method at budget H as bands over seeds; None without records."""
    J, sd = (interval(rep.values(het, rep.nmax, label, H, k).values()) for k in ("J", "R_std"))
    if not J["k"] or not sd["k"]:
        return None
    return band_of(J["mean"], J["lo"], J["hi"]), band_of(sd["mean"], sd["lo"], sd["hi"])


def data_side(rep: Report, het: str, H: int) -> tuple[dict, dict] | None:
    """(J, sd of R_H) at budget H of the data the VF reference clones: its SFT runs' training
    traces, each with r_h = 1{h >= T} of its own first-success index T, as bands over seeds;
    None where the records keep no such indices."""
    per_seed = [budget_metrics(torch.tensor([NEVER if t is None else t for t in T]), torch.zeros(len(T)), H)
                for (h, _, n, lab), runs in rep.runs.items() if (h, n, lab) == (het, rep.nmax, rep.vf)
                for r in runs if (T := ((r.get("learner") or {}).get("sft") or {}).get("data_T"))]
    if not per_seed:
        return None
    J, sd = interval([m.J for m in per_seed]), interval([m.R_std for m in per_seed])
    return band_of(J["mean"], J["lo"], J["hi"]), band_of(sd["mean"], sd["lo"], sd["hi"])


def prediction_check(rep: Report) -> list[dict]:
    """Per level: the diagnosis's prediction (base and VF data, before training) against the
    measured gap of the headline VB method at n_max: sign at H_max and growth from H_min. The VF
    data is the planted task's expert process (its sampled returns), or on a text task the traces
    the VF reference's SFT cloned (`data_side`)."""
    out = []
    for het in rep.hets:
        d, m = rep.diag.get((het, rep.Hmax)), headline_vb(rep, het)
        entry = {"setting": rep.where(het), "method": m, "reference": rep.vf, "sign_check": "n/a",
                 "growth_check": "n/a"}
        points, data = [], []
        for H in rep.budgets:
            b = side(rep, het, "base", H)
            v = side(rep, het, "expert", H) if rep.didactic else data_side(rep, het, H)
            data.append(v)
            if b and v:
                points.append({"H": H, "base_J": b[0], "base_sigma": b[1], "vf_J": v[0], "vf_sigma": v[1]})
        missing = ("no diagnosis record (c(ε))" if d is None else
                   f"records lack the returns of the data {rep.vf} clones" if not any(data) else
                   "records lack base or VF data returns" if not points else None)
        if missing is None:
            i = d["eps"].index(d["eps_ref"])
            c = band_of(*(d["mean_c"][k][i] for k in ("value", "lo", "hi")))
            margin = math.sqrt(d["eps_ref"]) if d.get("margin", "sqrt") == "sqrt" else d["eps_ref"]
            p = predict(points, c, n=rep.nmax, N=rep.study.samples_per_problem, margin=margin, kappa=KAPPA)
            entry.update(predicted=p, predicted_sign=SIGN_WORDS[p["sign"]],
                         predicted_growth=GROWTH_WORDS[p["growth_sign"]])
        else:
            entry.update(predicted=None, predicted_sign=f"not testable: {missing}", predicted_growth="n/a")
        if m is not None:
            H0, H1 = rep.budgets[0], rep.budgets[-1]
            gap = lambda H: diff((het, rep.nmax, m, H), (het, rep.nmax, rep.vf, H))  # noqa: E731
            g1, dg = rep.contrast("J", gap(H1)), rep.contrast("J", minus(gap(H1), gap(H0)))
            ms, mg = (sign({"lo": iv["lo"], "hi": iv["hi"]}) if iv else "?" for iv in (g1, dg))
            entry.update(measured_gap=g1, measured_growth=dg, measured_sign=SIGN_WORDS[ms],
                         measured_growth_sign=GROWTH_WORDS[mg])
            if entry["predicted"]:
                entry.update(sign_check=check(entry["predicted"]["sign"], ms),
                             growth_check=check(entry["predicted"]["growth_sign"], mg) if len(rep.budgets) > 1
                             else "undecided")
        out.append(entry)
    return out
