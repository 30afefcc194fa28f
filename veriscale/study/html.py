"""The report's self-contained HTML page, rendered from the `Report` and its summary dict
(veriscale/study/report.py computes every number; this file only lays them out)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from veriscale.study.analysis import LEARNER_FIELDS
from veriscale.theory import band, fit_text, fmt, num



def _table(rows_: list[list[str]], head: list[str], cls: str = "") -> str:
    cells = lambda r, t: "".join(f"<{t}>{html.escape(str(c))}</{t}>" for c in r)  # noqa: E731
    return f"<table{f' class={cls}' if cls else ''}><tr>{cells(head, 'th')}</tr>" + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows_) + "</table>"


def _evidence(r: dict) -> str:
    """A learners-table row's evidence that each learner moved from its start, in words."""
    g = lambda k: num(r.get(k))  # noqa: E731
    parts = []
    if "sft.best_step" in r:
        parts.append(f"SFT test NLL {g('sft.test_nll_before')} -> {g('sft.test_nll_after')}, validation NLL "
                     f"{g('sft.val_nll_before')} -> {g('sft.val_nll_after')}, kept step "
                     f"{g('sft.best_step')}/{g('sft.steps_planned')}")
    if "verifier.best_step" in r:
        parts.append(f"verifier validation loss {g('verifier.start.heldout_loss')} -> {g('verifier.kept.heldout_loss')}"
                     f", AUC at length {g('verifier.start.heldout_auc_at_length')} -> "
                     f"{g('verifier.kept.heldout_auc_at_length')}, final-prefix AUC "
                     f"{g('verifier.start.heldout_auc_final')} -> {g('verifier.kept.heldout_auc_final')}, kept step "
                     f"{g('verifier.best_step')}/"
                     f"{g('verifier.steps_planned')}")
    if "rl.steps" in r:
        parts.append(f"RL reward {g('rl.reward_first')} -> {g('rl.reward_last')}, return {g('rl.return_first')} -> "
                     f"{g('rl.return_last')}, final KL {g('rl.kl_last')}, {g('rl.steps')} steps")
    return "; ".join(parts)


VERDICT_COLOURS = {"supported": "#d8f0d8", "contradicted": "#f6d5d5", "inconclusive": "#f3ecd0"}
RULE = ("Each claim is read as a measured difference whose sign the theory predicts, with a 95% interval paired by "
        "seed and prompt (a t-interval over seeds and prompts; over seeds alone for records without "
        "per-problem outcomes; each row says which): entirely on the predicted side of 0, supported; entirely on "
        "the other side, "
        "contradicted; containing 0, inconclusive; what the difference needs missing from the grid or the records, "
        "not testable. The full rule, and which cells each claim reads: docs/verdicts.md.")


def _link_text(anchor: str) -> str:
    """fig_c_gap_vs_H -> "figure c"; a table's anchor -> "table"."""
    return f"figure {anchor.split('_')[1]}" if anchor.startswith("fig_") else "table"


def _verdict_table(rows_: list[dict], anchors: set[str]) -> str:
    """The first screen: one row per claim of the paper, its verdict coloured, a link to its figure
    (where the page has it: `anchors`)."""
    body = "".join(
        f"<tr><td>{html.escape(r['claim'])}</td><td>{html.escape(r['title'])}</td><td>{html.escape(r['theory'])}</td>"
        f"<td>{html.escape(r['measured'])}</td>"
        f"<td style='background:{VERDICT_COLOURS.get(r['verdict'], '#eee')}'><b>{html.escape(r['verdict'])}</b></td>"
        + (f"<td><a href='#{r['figure']}'>{_link_text(r['figure'])}</a></td></tr>" if r["figure"] in anchors
           else "<td>none</td></tr>")
        for r in rows_)
    head = "".join(f"<th>{h}</th>" for h in ("", "claim of the paper", "theory predicts", "measured [95% CI]",
                                             "verdict", "figure"))
    return f"<table class=verdicts><tr>{head}</tr>{body}</table><p class=rule>{html.escape(RULE)}</p>"


def _prediction_table(rows_: list[dict]) -> str:
    """The diagnosis's prediction (before training) against the measured gap, per setting."""
    def band(b):
        return "n/a" if b is None else f"{num(b['value'])} [{num(b['lo'])}, {num(b['hi'])}]"

    body = []
    for r in rows_:
        p = r["predicted"]
        body.append([r["setting"], f"{r['method'] or 'n/a'} − {r['reference']}",
                     f"{band(p['gaps'][-1]) if p else 'n/a'}: {r['predicted_sign']}",
                     f"{band(p['growth']) if p else 'n/a'}: {r['predicted_growth']}",
                     f"{fmt(r['measured_gap']) if r.get('measured_gap') else 'n/a'}: {r.get('measured_sign', 'n/a')}",
                     f"{fmt(r['measured_growth']) if r.get('measured_growth') else 'n/a'}: "
                     f"{r.get('measured_growth_sign', 'n/a')}", r["sign_check"], r["growth_check"]])
    head = ["setting", "VB − VF", "predicted gap at H_max (tokens)", "predicted growth H_min → H_max",
            "measured gap at H_max", "measured growth", "sign", "growth"]
    return _table(body, head, "pred")


def _details(title: str, inner: str, open_: bool = False, anchor: str = "") -> str:
    """A collapsible section (open: unfolded at load; anchor: the id a verdict row links to)."""
    attrs = (" open" if open_ else "") + (f" id='{anchor}'" if anchor else "")
    return f"<details{attrs}><summary><b>{html.escape(title)}</b></summary>{inner}</details>"


def _findings(findings: list[str]) -> str:
    """The findings, with every "no fit" finding summarised in one line (their points are in summary.json)."""
    unfit = [f for f in findings if "no fit (" in f]
    kept = [f for f in findings if "no fit (" not in f]
    items = "".join(f"<li>{html.escape(f)}</li>" for f in kept)
    if unfit:
        items += (f"<li>{len(unfit)} power-law fits have fewer than 2 positive seed means and no exponent; their "
                  "points are in summary.json.</li>")
    return f"<ul>{items}</ul>"


def render(rep, s: dict, figs: list[tuple[Path, str]]) -> str:
    """report.html: the verdict table and the prediction check first; findings, tables, fits,
    embedded figures (base64 PNGs), learners and all results below, in collapsible sections."""
    study = rep.study
    anchors = {p.stem for p, _ in figs} | ({"levels"} if s.get("levels") or rep.diag else set())
    sections = [f"<h2>The paper's claims on this grid</h2>{_verdict_table(s['verdicts'], anchors)}",
                "<h2>The diagnosis's prediction (before training) against the measured gap</h2>"
                + _prediction_table(s["prediction_check"])
                + "<p class=rule>Predicted from the base policy's return, its spread and c(ε) and from the return and "
                  "spread of the data VF clones (veriscale/predict.py); measured: the study's headline VB method "
                  f"(vb_reference, named before it ran), at H = {rep.Hmax}, n = {rep.nmax}. A prediction is judged only where both signs are decided.</p>"]
    more = [_details("Findings (measured)", _findings(s["findings"]))]
    if s.get("levels"):
        head = ["level", "configured spread", "expert sigma(T)/H", "base sigma(T)/H", "diagnosis sigma(R)/H",
                "base c(eps_ref)", "verdict"] + [f"base success@{H}" for H in rep.budgets]
        body = [[r["heterogeneity"], r["spread"], fmt(r["expert_sigma_over_H"]), fmt(r["base_sigma_over_H"]),
                 *([band(d["sigma_over_H"]), band(d["c_ref"]), d["verdict"]] if (d := r["diagnosis"])
                   else ["no diagnosis"] * 3),
                 *[fmt(r["base_success"][H]) for H in rep.budgets]] for r in s["levels"]]
        more.append(_details(f"Heterogeneity levels (H = {rep.Hmax}, n = {rep.nmax})", _table(body, head)
                             + "<p>sigma(T)/H: sd of the first-success index over successful traces; the diagnosis "
                               "columns carry the diagnosis's own interval over prompts.</p>", open_=True, anchor="levels"))
    elif rep.diag:
        body = [[rep.where(het), H, band(d["sigma_over_H"]),
                 band(d["sigma_median_over_H"]) if "sigma_median_over_H" in d else "n/a", band(d["pass_rate"]),
                 d["verdict"]] for (het, H), d in sorted(rep.diag.items(), key=lambda kv: (  # the study's level order
                     rep.hets.index(kv[0][0]) if kv[0][0] in rep.hets else len(rep.hets), kv[0][1]))]
        more.append(_details("Base diagnosis (interval over prompts)", _table(
            body, ["base", "H", "sigma(R)/H, root-mean-square", "sigma(R)/H, median", "pass rate", "verdict"]),
            open_=True, anchor="levels"))
    if s.get("bases"):
        body = [[b["level"], f"{b['training_traces']}, {b['tokens']} (budget {b['budget']})",
                 f"{num(b['data_T_mean'])}, {num(b['data_T_sd'])}", f"{b['best_step']} / {b['steps_planned']}",
                 f"{num(b['val_nll_before'])} -> {num(b['val_nll_after'])}"] for b in s["bases"]]
        more.append(_details("How each base was shaped (learn/shape.py)", _table(
            body, ["base", "training traces, trace tokens", "their first-success index: mean, sd", "kept step / planned",
                   "validation NLL before -> after"])
            + "<p>Each base is the policy fine-tuned on its own checked samples, shaped to the level; every level "
              "trains on the same trace-token budget.</p>", open_=True))
    if s.get("clones"):
        head = ["level", "clone", "target", "test NLL before -> after", "success@H", "target success", "mean T",
                "target mean T", "sigma(T)/H", "target sigma(T)/H"]
        body = [[r["heterogeneity"], r["method"], r["target"], f"{fmt(r['nll_before'])} -> {fmt(r['nll_after'])}",
                 *[fmt(r[p + k]) for k in ("success", "T_mean", "sigma_over_H") for p in ("", "target_")]]
                for r in s["clones"]]
        more.append(_details(f"VF clones against their targets (H = {rep.Hmax}, n = {rep.nmax})", _table(body, head)))
    fits = [(f"suboptimality {f['kind']}", f["heterogeneity"], f["method"], f"{f['theory_slope']:g}", f["fit"])
            for f in s.get("suboptimality", [])]
    fits += [(f"gap vs H, {f['setting']}", f["heterogeneity"], f"{f['method']} - {f['reference']}",
              "1/2 (data growing with H)" if f["setting"] == "diagonal" else "1 and 1/2 drawn", f["fit"])
             for f in s["gap_vs_H"]]
    fits += [("sigma(T) vs H", f["heterogeneity"], f["method"], num(f["configured_beta"]), f["fit"])
             for f in s.get("sigma_vs_H", [])]
    if fits:
        fitted = [[what, het, m, fit_text(f), theory] for what, het, m, theory, f in fits if f["points"] >= 2]
        note = (f"<p>{len(fits) - len(fitted)} of {len(fits)} fits have fewer than 2 positive seed means and no "
                "exponent; their points are in summary.json.</p>") if len(fitted) < len(fits) else ""
        more.append(_details("Power-law fits", _table(fitted, ["fit", "level", "method", "measured", "theory"]) + note))
    more.append(_details("Figures", "".join(
        f"<figure id='{p.stem}'><img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
        f"<figcaption>{html.escape(c)}</figcaption></figure>" for p, c in figs), open_=True))
    if s["learners"]:
        data = [f.removeprefix("data.") for f in LEARNER_FIELDS if f.startswith("data.")]
        body = [[r["heterogeneity"], r["H"], r["n"], r["method"], *[num(r.get(f"data.{k}")) for k in data],
                 _evidence(r)] for r in s["learners"]]
        more.append(_details("Learners: data consumed and evidence (mean over seeds)",
                             _table(body, ["level", "trained at H", "n", "method", *data, "evidence"])))
    if s["multipliers"]:
        body = [[m["heterogeneity"], m["method"], m["axis"], m["at"],
                 "not reached" if m["multiplier"] is None else num(m["multiplier"]), m["kind"]]
                for m in s["multipliers"]]
        more.append(_details("Compute and data multipliers (seed means)",
                             _table(body, ["level", "method", "axis", "at", "multiplier", "kind"])))
    body = [[r["heterogeneity"], r["n"], r["method"], r["H"], r["seeds"],
             *[fmt(r[k]) for k in ("J_norm", "J", "success", "tokens")]] for r in s["results"]]
    more.append(_details("All results", _table(
        body, ["level", "n", "method", "H", "seeds", "J_H/H", "J_H (tokens)", "success@H", "tokens"])))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>veriscale: {html.escape(study.name)}</title>
<style>body{{font-family:sans-serif;max-width:1320px;margin:1em auto;padding:0 1em;font-size:14px}}
img{{max-width:100%}}h1{{font-size:1.4em;margin:.3em 0}}h2{{font-size:1.15em;margin:.8em 0 .3em}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}
table.verdicts{{font-size:13px;width:100%}}.verdicts td,.verdicts th,.pred td,.pred th{{text-align:left;vertical-align:top}}
.rule{{color:#555;font-size:12px;margin:.3em 0}}details{{margin:.6em 0}}summary{{cursor:pointer}}
figure{{margin:1.5em 0}}figcaption{{color:#444}}li{{margin:.3em 0}}.intro{{font-size:12px;color:#333}}</style>
</head><body>
<h1>veriscale study: {html.escape(study.name)} — does verification pay off?</h1>
<p class=intro>Verifier-free ({html.escape(rep.vf)}) versus verifier-based ({html.escape(', '.join(rep.vb) or 'none')})
methods. {html.escape(study.describe())} {html.escape(rep.mode())}. Grid: budgets {rep.budgets}, n {rep.ns}, seeds
{list(study.seeds)}, {study.eval_prompts} held-out prompts per run. Records: {len(rep.records)} of {rep.expected}
runs finished. Intervals: {html.escape(s['study']['intervals'])}. Every number here is in summary.json.</p>
{''.join(sections)}
{''.join(more)}
</body></html>"""
