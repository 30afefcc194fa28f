"""The study report: `veriscale report STUDY_DIR` reads the stored records (and study.json) and
writes into the study directory the PNG figures (figures.py, curves.py), `report.html`
(self-contained: the PNGs embedded as base64; html.py) and `summary.json`, a machine-readable
dump of every number the report states (verdicts, tables, fits with their intervals, excluded
points), so a README can quote it. The numbers come from `analysis.Report`; the verdict on each
of the paper's claims and the check of the diagnosis's prediction from verdicts.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from veriscale.atomic import write_text_atomic
from veriscale.study import curves, figures, verdicts
from veriscale.study.analysis import Report
from veriscale.study.html import render
from veriscale.study.sweep import load_study


def _clean(obj):
    """JSON-safe copy: NaN and infinities become null (strict JSON), keys strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_report(study_dir: str | Path) -> Path:
    """Make every figure, `report.html` and `summary.json` from the stored records of `study_dir`."""
    study_dir = Path(study_dir)
    study = load_study(study_dir)
    rep = Report(study, study_dir)
    if not rep.flat:
        raise ValueError(f"{study_dir}: no finished records to report")
    has_vf = any(r["method"] == rep.vf for r in rep.flat)
    s = {"study": {"name": study.name, "track": study.track, "mode": study.mode, "mode_note": rep.mode(),
                   "budgets": rep.budgets, "n": rep.ns, "seeds": list(study.seeds), "levels": rep.hets,
                   "methods": rep.labels, "vf_reference": rep.vf, "vb_methods": rep.vb,
                   "records_finished": len(rep.records), "records_expected": rep.expected,
                   "intervals": ("returns and success rates: 95% Student-t over seeds and prompts (var(seed means)/S "
                                 "+ var(prompt means)/P, cut to the range) where records keep per-problem outcomes; "
                                 "other metrics and older records: over seeds (one seed: within-run where stored)"),
                   "diagonal": {"c": rep.c and str(rep.c), "pairs": rep.pairs}}}
    if rep.didactic:
        s["levels"], s["clones"] = rep.levels(), rep.clones()
        s["suboptimality"] = rep.suboptimality()
    else:
        s["bases"] = rep.bases()
        rep.findings.append("Suboptimality against n is not computed on the LLM track: it has no expert process "
                            "to clone and no known optimal return J*_H.")
    if not (rep.vb and has_vf):
        rep.findings.append(f"No VB - VF gap can be computed: the records hold no {rep.vf} (the VF reference) "
                            "or no VB method.")
    s["gap_vs_H"] = rep.gaps() if rep.vb and has_vf else []
    if rep.didactic and study.mode == "horizon":
        s["sigma_vs_H"] = rep.sigma_vs_H()
    rep.best_of_n()
    rep.unmoved()
    s["learners"], s["multipliers"], s["results"] = rep.learners(), rep.multipliers() if has_vf else [], rep.results()
    s["findings"] = rep.findings
    s["verdicts"], s["prediction_check"] = verdicts.claims(rep, s), verdicts.prediction_check(rep)
    figs = figures.draw_all(rep, s) + [f for f in [curves.fig_learners(rep)] if f is not None]
    write_text_atomic(study_dir / "summary.json", json.dumps(_clean(s), indent=1))
    out = study_dir / "report.html"
    write_text_atomic(out, render(rep, s, figs))
    return out
