"""The report's self-contained HTML page, rendered from the `Report` and its summary dict
(veriscale/study/report.py computes every number; this file only lays them out)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from veriscale.theory import band, fit_text, fmt, num

# What the learners table states per run: data consumed, and the evidence that each learner moved.
LEARNER_FIELDS = ([f"data.{k}" for k in ("prompts", "expert_traces", "labelled_traces", "reward_queries",
                                         "validation_traces")]
                  + [f"learner.sft.{k}" for k in ("test_nll_before", "test_nll_after", "val_nll_before",
                                                   "val_nll_after", "best_step", "steps_planned")]
                  + [f"learner.verifier.{k}" for k in ("start.heldout_loss", "kept.heldout_loss",
                                                       "start.heldout_auc_at_length", "kept.heldout_auc_at_length",
                                                       "start.heldout_auc_final", "kept.heldout_auc_final",
                                                       "best_step", "steps_planned")]
                  + [f"learner.rl.{k}" for k in ("reward_first", "reward_last", "return_first", "return_last",
                                                 "kl_last", "steps")])
def _table(rows_: list[list[str]], head: list[str]) -> str:
    cells = lambda r, t: "".join(f"<{t}>{html.escape(str(c))}</{t}>" for c in r)  # noqa: E731
    return f"<table><tr>{cells(head, 'th')}</tr>" + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows_) + "</table>"


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


def render(rep, s: dict, figs: list[tuple[Path, str]]) -> str:
    """report.html: findings, tables, fits, embedded figures (base64 PNGs), learners, all results."""

    study = rep.study
    sections = [f"<h2>Findings (measured)</h2><ul>{''.join(f'<li>{html.escape(f)}</li>' for f in s['findings'])}</ul>"]
    if s.get("levels"):
        head = ["level", "configured spread", "expert sigma(T)/H", "base sigma(T)/H", "diagnosis sigma(R)/H",
                "base c(eps_ref)", "verdict"] + [f"base success@{H}" for H in rep.budgets]
        body = [[r["heterogeneity"], r["spread"], fmt(r["expert_sigma_over_H"]), fmt(r["base_sigma_over_H"]),
                 *([band(d["sigma_over_H"]), band(d["c_ref"]), d["verdict"]] if (d := r["diagnosis"])
                   else ["no diagnosis"] * 3),
                 *[fmt(r["base_success"][H]) for H in rep.budgets]] for r in s["levels"]]
        sections.append(f"<h2>Heterogeneity levels (H = {rep.Hmax}, n = {rep.nmax})</h2>{_table(body, head)}"
                        "<p>sigma(T)/H: sd of the first-success index over successful traces; the diagnosis "
                        "columns carry the diagnosis's own interval over prompts.</p>")
    if s.get("clones"):
        head = ["level", "clone", "target", "test NLL before -> after", "success@H", "target success", "mean T",
                "target mean T", "sigma(T)/H", "target sigma(T)/H"]
        body = [[r["heterogeneity"], r["method"], r["target"], f"{fmt(r['nll_before'])} -> {fmt(r['nll_after'])}",
                 *[fmt(r[p + k]) for k in ("success", "T_mean", "sigma_over_H") for p in ("", "target_")]]
                for r in s["clones"]]
        sections.append(f"<h2>VF clones against their targets (H = {rep.Hmax}, n = {rep.nmax})</h2>"
                        + _table(body, head))
    fits = [(f"suboptimality {f['kind']}", f["heterogeneity"], f["method"], f"{f['theory_slope']:g}", f["fit"])
            for f in s.get("suboptimality", [])]
    fits += [(f"gap vs H, {f['setting']}", f["heterogeneity"], f"{f['method']} - {f['reference']}",
              "1/2 (data growing with H)" if f["setting"] == "diagonal" else "1 and 1/2 drawn", f["fit"])
             for f in s["gap_vs_H"]]
    fits += [("sigma(T) vs H", f["heterogeneity"], f["method"], num(f["configured_beta"]), f["fit"])
             for f in s.get("sigma_vs_H", [])]
    if fits:
        body = [[what, het, m, fit_text(f), theory] for what, het, m, theory, f in fits]
        sections.append("<h2>Power-law fits</h2>" + _table(body, ["fit", "level", "method", "measured", "theory"]))
    sections += [f"<figure><img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
                 f"<figcaption>{html.escape(c)}</figcaption></figure>" for p, c in figs]
    if s["learners"]:
        data = [f.removeprefix("data.") for f in LEARNER_FIELDS if f.startswith("data.")]
        body = [[r["heterogeneity"], r["H"], r["n"], r["method"], *[num(r.get(f"data.{k}")) for k in data],
                 _evidence(r)] for r in s["learners"]]
        sections.append("<h2>Learners: data consumed and evidence (mean over seeds)</h2>"
                        + _table(body, ["level", "trained at H", "n", "method", *data, "evidence"]))
    if s["multipliers"]:
        body = [[m["heterogeneity"], m["method"], m["axis"], m["at"],
                 "not reached" if m["multiplier"] is None else num(m["multiplier"]), m["kind"]]
                for m in s["multipliers"]]
        sections.append("<h2>Compute and data multipliers (seed means)</h2>"
                        + _table(body, ["level", "method", "axis", "at", "multiplier", "kind"]))
    body = [[r["heterogeneity"], r["n"], r["method"], r["H"], r["seeds"],
             *[fmt(r[k]) for k in ("J_norm", "J", "success", "tokens")]] for r in s["results"]]
    sections.append("<details><summary><b>All results</b></summary>" + _table(
        body, ["level", "n", "method", "H", "seeds", "J_H/H", "J_H (tokens)", "success@H", "tokens"]) + "</details>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>veriscale: {html.escape(study.name)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}}img{{max-width:100%}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}
figure{{margin:1.5em 0}}figcaption{{color:#444}}li{{margin:.3em 0}}</style></head><body>
<h1>veriscale study: {html.escape(study.name)}</h1>
<p>Verifier-free ({html.escape(rep.vf)}) versus verifier-based ({html.escape(', '.join(rep.vb) or 'none')}) methods.
{html.escape(study.describe())} {html.escape(rep.mode())}. Grid: budgets {rep.budgets}, n {rep.ns}, seeds
{list(study.seeds)}, {study.eval_prompts} held-out prompts per run. Records: {len(rep.records)} of {rep.expected}
runs finished. Intervals: {html.escape(s['study']['intervals'])}. Every number here is in summary.json.</p>
{''.join(sections)}
</body></html>"""
