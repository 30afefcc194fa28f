"""Plots and one self-contained HTML report, made only from a study's stored records.

`veriscale report STUDY_DIR` writes PNGs and `report.html` (PNGs embedded as base64) into the
study directory. Figures (issue 4): (a) J_H/H and success@H vs H per method at the largest n;
(b) the same vs n at the largest H; (c) gap of each VB method over the VF reference vs H on
log-log axes, return units, with the fitted exponent alpha and a sqrt(H) reference, and the
success gap beside it; (d) gap vs heterogeneity; (e) compute and data multipliers; (f) the
theory's shapes scaled to one measured point. Intervals are 95% over seeds (normal
approximation; the within-run interval when there is a single seed).
"""

from __future__ import annotations

import base64
import html
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from veriscale.study.jobs import expand  # noqa: E402
from veriscale.study.spec import StudyConfig  # noqa: E402
from veriscale.study.store import load_records, rows  # noqa: E402
from veriscale.study.sweep import load_study  # noqa: E402
from veriscale.theory import crossing, fit_power_law, scaled, vb_shape, vf_shape  # noqa: E402


def _agg(flat: list[dict], key: str) -> dict[tuple, tuple[float, float, int]]:
    """(het, n, method, H) -> (mean over seeds, 95% half-width, seeds) of metric `key`."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in flat:
        groups[(r["heterogeneity"], r["n"], r["method"], r["budget"])].append(r)
    out = {}
    for k, rs in groups.items():
        v = np.array([r[key] for r in rs], dtype=float)
        if len(v) > 1:
            half = 1.96 * v.std(ddof=1) / math.sqrt(len(v))
        else:  # one seed: the run's own interval over prompts, when it has one
            lo, hi = rs[0].get(f"{key}_lo"), rs[0].get(f"{key}_hi")
            half = (hi - lo) / 2 if lo is not None and hi is not None else 0.0
        out[k] = (float(v.mean()), float(half), len(v))
    return out


def _per_seed(flat: list[dict], key: str) -> dict[tuple, dict[int, float]]:
    out: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in flat:
        out[(r["heterogeneity"], r["n"], r["method"], r["budget"])][r["seed"]] = r[key]
    return out


def _log_y(ax) -> None:
    """Log y axis when the plotted data has a positive value; otherwise stay linear and say so
    (a measured gap may well be negative everywhere)."""
    ys = [y for line in ax.get_lines() for y in np.asarray(line.get_ydata(), dtype=float)]
    if any(np.isfinite(y) and y > 0 for y in ys):
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no positive values to draw on a log axis", transform=ax.transAxes, ha="center")


def _alpha_text(fit: dict) -> str:
    if not np.isfinite(fit["alpha"]):
        return "no positive gap to fit"
    ci = f", 95% CI [{fit['lo']:.2f}, {fit['hi']:.2f}]" if np.isfinite(fit["lo"]) else " (too few points for a CI)"
    return f"alpha = {fit['alpha']:.2f}{ci}"


def _budget_ticks(ax, xs) -> None:
    """Plain tick labels at the measured x values of a log axis."""
    ax.set_xticks(list(xs), [str(x) for x in xs])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class Report:
    def __init__(self, study: StudyConfig, study_dir: Path):
        self.study, self.dir = study, study_dir
        wanted = {j.id for j in expand(study) if j.kind == "eval"}
        self.records = [r for r in load_records(study_dir) if r["id"] in wanted]
        self.expected = len(wanted)
        self.flat = rows(self.records)
        self.J = _agg(self.flat, "J_norm")
        self.S = _agg(self.flat, "success")
        self.hets = [h for h in study.heterogeneity if any(r["heterogeneity"] == h for r in self.flat)]
        self.methods = [m for m in study.methods if any(r["method"] == m for r in self.flat)]
        self.budgets = sorted(study.budgets)
        self.ns = sorted(study.n)
        self.vf = study.vf_reference
        self.vb = [m for m in self.methods if m in study.vb_methods]
        self.captions: list[tuple[Path, str]] = []
        self.notes: list[str] = []

    def _curve(self, table, het, n, method, xs, along: str):
        keys = [(het, x, method, self.budgets[-1]) if along == "n" else (het, n, method, x) for x in xs]
        pts = [(x, *table[k][:2]) for x, k in zip(xs, keys) if k in table]
        return [p[0] for p in pts], np.array([p[1] for p in pts]), np.array([p[2] for p in pts])

    def fig_vs(self, along: str) -> None:
        xs = self.budgets if along == "H" else self.ns
        fig, axes = plt.subplots(2, len(self.hets), figsize=(5 * len(self.hets), 7.5), squeeze=False)
        for j, het in enumerate(self.hets):
            for i, (table, label) in enumerate([(self.J, "J_H / H"), (self.S, "success@H")]):
                ax = axes[i][j]
                for method in self.methods:
                    x, y, e = self._curve(table, het, self.ns[-1], method, xs, along)
                    if len(x):
                        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=method)
                ax.set_xscale("log", base=2)
                _budget_ticks(ax, xs)
                ax.set_xlabel("budget H (tokens)" if along == "H" else "training prompts n")
                ax.set_ylabel(label)
                fixed = f"n = {self.ns[-1]}" if along == "H" else f"H = {self.budgets[-1]}"
                ax.set_title(f"heterogeneity {het}, {fixed}")
                ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        name = "fig_a_vs_H.png" if along == "H" else "fig_b_vs_n.png"
        cap = ("(a) J_H/H and success@H against the budget H" if along == "H" else
               "(b) J_H/H and success@H against the data size n") + f", 95% CI over seeds; {self._mode()}."
        self.captions.append((_save(fig, self.dir / name), cap))

    def fig_tokens(self) -> None:
        """Success against the tokens each method actually spent (mean per problem), one point per
        budget: the compute-matched view (a method that stops early is drawn further left)."""
        fig, axes = plt.subplots(1, len(self.hets), figsize=(6 * len(self.hets), 4.5), squeeze=False)
        T = _agg(self.flat, "tokens")
        for ax, het in zip(axes[0], self.hets):
            for method in self.methods:
                keys = [(het, self.ns[-1], method, H) for H in self.budgets if (het, self.ns[-1], method, H) in self.S]
                if keys:
                    ax.errorbar([T[k][0] for k in keys], [self.S[k][0] for k in keys], yerr=[self.S[k][1] for k in keys],
                                marker="o", capsize=3, label=method)
            ax.set(xscale="log", xlabel="tokens spent per problem (mean; the budget H caps it)", ylabel="success@H",
                   title=f"{het}, n = {self.ns[-1]}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        self.captions.append((_save(fig, self.dir / "fig_tokens.png"),
                              "Success against the total tokens spent per problem, one point per budget H "
                              "(95% CI over seeds, or over prompts with one seed)."))

    def _mode(self) -> str:
        if self.study.track == "llm":
            return ("sequential methods in forced_methods sampled once per H with budget forcing, the others once at "
                    "H_max and truncated (re-graded); search truncates N samples of floor(H_max/N) tokens")
        return ("test-time mode: learners trained once at H_max, each policy sampled once at H_max and "
                "truncated" if self.study.mode == "test-time" else "horizon mode: task and learners built per H")

    def _gap_points(self, het: str, method: str, key: str) -> tuple[list[float], list[float]]:
        """Per-seed gap points (H, value(VB) - value(VF)); for returns, value = J_H (tokens)."""
        per = _per_seed(self.flat, key)
        xs, ys = [], []
        for H in self.budgets:
            vb, vf = per.get((het, self.ns[-1], method, H), {}), per.get((het, self.ns[-1], self.vf, H), {})
            for seed in sorted(set(vb) & set(vf)):
                scale = H if key == "J_norm" else 1.0  # J_norm * H = J_H in return units
                xs.append(H)
                ys.append((vb[seed] - vf[seed]) * scale)
        return xs, ys

    def fig_gap(self) -> None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        H = np.array(self.budgets, dtype=float)
        for het in self.hets:
            for method in self.vb:
                xs, ys = self._gap_points(het, method, "J_norm")
                fit = fit_power_law(xs, ys)
                means = [np.mean([y for x, y in zip(xs, ys) if x == h]) if h in xs else np.nan for h in H]
                label = f"{method} - {self.vf}, {het}: {_alpha_text(fit)}"
                axes[0].plot(H, np.where(np.array(means) > 0, means, np.nan), marker="o", label=label)
                self.notes.append(f"Gap {method} - {self.vf} (heterogeneity {het}, n = {self.ns[-1]}): "
                                  f"{_alpha_text(fit)} from {fit['points']} positive per-seed points "
                                  f"({fit['excluded']} non-positive excluded). The theory's exponent is 1/2 "
                                  "when data grows with compute; here n is fixed.")
                sx, sy = self._gap_points(het, method, "success")
                sm = [np.mean([y for x, y in zip(sx, sy) if x == h]) if h in sx else np.nan for h in H]
                axes[1].plot(H, sm, marker="o", label=f"{method} - {self.vf}, {het}")
        # The sqrt(H) reference passes through the median of the positive gaps at the first budget
        # where any curve is positive, so its slope can be compared by eye.
        firsts = [(x, y) for line in axes[0].get_lines()
                  for x, y in zip(line.get_xdata(), line.get_ydata()) if np.isfinite(y) and y > 0]
        if firsts:
            x0 = min(x for x, _ in firsts)
            y0 = float(np.median([y for x, y in firsts if x == x0]))
            axes[0].plot(H, y0 * np.sqrt(H / x0), "k--", label=f"sqrt(H) reference (through H = {x0:g})")
        axes[0].set(xscale="log", xlabel="budget H", ylabel="J_H(VB) - J_H(VF)  (tokens)",
                    title="gap in return units (log-log)")
        _log_y(axes[0])
        axes[1].set(xscale="log", xlabel="budget H", ylabel="success@H(VB) - success@H(VF)", title="success gap")
        axes[1].axhline(0, color="grey", lw=0.8)
        for ax in axes:
            _budget_ticks(ax, self.budgets)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        self.captions.append((_save(fig, self.dir / "fig_c_gap_vs_H.png"),
                              f"(c) The main figure: gap of each VB method over {self.vf} at n = {self.ns[-1]}, "
                              f"non-positive gaps not drawn on the log axis; {self._mode()}."))

    def fig_gap_vs_het(self) -> None:
        fig, ax = plt.subplots(figsize=(6, 4))
        Hm = self.budgets[-1]
        width = 0.8 / max(1, len(self.vb))
        for i, method in enumerate(self.vb):
            vals = [self.J.get((h, self.ns[-1], method, Hm), (np.nan,))[0] * Hm -
                    self.J.get((h, self.ns[-1], self.vf, Hm), (np.nan,))[0] * Hm for h in self.hets]
            ax.bar(np.arange(len(self.hets)) + i * width, vals, width, label=method)
        ax.set_xticks(np.arange(len(self.hets)) + width * (len(self.vb) - 1) / 2, self.hets)
        ax.set(xlabel="heterogeneity", ylabel=f"J_H(VB) - J_H({self.vf}) at H = {Hm} (tokens)")
        ax.axhline(0, color="grey", lw=0.8)
        ax.legend(fontsize=8)
        self.captions.append((_save(fig, self.dir / "fig_d_gap_vs_heterogeneity.png"),
                              f"(d) Gap over {self.vf} by heterogeneity at H = {Hm}, n = {self.ns[-1]}."))

    def multipliers(self) -> list[dict]:
        """For each VB method, het and budget: tokens (and data) VF needs to reach VB's success."""
        out = []
        for het in self.hets:
            for method in self.vb:
                vf_H = [self.S.get((het, self.ns[-1], self.vf, h), (np.nan,))[0] for h in self.budgets]
                for h in self.budgets:
                    target = self.S.get((het, self.ns[-1], method, h), (np.nan,))[0]
                    out.append(self._multiplier(het, method, "tokens", h, self.budgets, vf_H, target))
                vf_n = [self.S.get((het, n, self.vf, self.budgets[-1]), (np.nan,))[0] for n in self.ns]
                for n in self.ns:
                    target = self.S.get((het, n, method, self.budgets[-1]), (np.nan,))[0]
                    out.append(self._multiplier(het, method, "data", n, self.ns, vf_n, target))
        return out

    @staticmethod
    def _multiplier(het, method, axis, at, xs, vf, target) -> dict:
        """x(VF reaches target) / at; "at most" when VF already exceeds the target at the grid's
        smallest point (the true crossing may lie below the grid)."""
        x = crossing(xs, vf, target) if np.isfinite(target) else None
        kind = "not reached" if x is None else "at most" if x == xs[0] and vf[0] > target else "interpolated"
        return {"heterogeneity": het, "method": method, "axis": axis, "at": at,
                "multiplier": None if x is None else x / at, "kind": kind}

    def fig_multiplier(self, mult: list[dict]) -> None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, axis in zip(axes, ["tokens", "data"]):
            for het in self.hets:
                for method in self.vb:
                    pts = [m for m in mult if m["axis"] == axis and m["heterogeneity"] == het and m["method"] == method]
                    xs = [m["at"] for m in pts]
                    ys = [m["multiplier"] if m["multiplier"] is not None else np.nan for m in pts]
                    line, = ax.plot(xs, ys, marker="o", label=f"{method}, {het}")
                    miss = [m["at"] for m in pts if m["multiplier"] is None]
                    # "not reached" has no value: a cross along the top edge of the panel
                    ax.scatter(miss, [0.97] * len(miss), marker="x", s=60, color=line.get_color(),
                               transform=ax.get_xaxis_transform(), clip_on=False)
            ax.set(xscale="log", xlabel="budget H" if axis == "tokens" else "data n",
                   ylabel=f"x more {axis} VF needs", title=f"{axis} multiplier (x on top = VF never reaches it)")
            _log_y(ax)
            _budget_ticks(ax, self.budgets if axis == "tokens" else self.ns)
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        self.captions.append((_save(fig, self.dir / "fig_e_multiplier.png"),
                              f"(e) How many times more test-time tokens (left) or training prompts (right) "
                              f"{self.vf} needs to reach each VB method's success, interpolated in log scale; "
                              "a cross along the top means VF never reaches it within the grid; below 1, VF needs less."))

    def fig_theory(self) -> None:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        Hm, n = self.budgets[-1], np.array(self.ns, dtype=float)
        best = (Hm - self.study.task.answer_len + 1) / Hm  # answering at once, correctly
        for het in self.hets:
            # The VB method drawn is the best one at the largest n and H (one curve per family).
            vb = max(self.vb, key=lambda m: self.J.get((het, self.ns[-1], m, Hm), (-np.inf,))[0])
            for method, shape, label in [(self.vf, vf_shape(n), "sigma*sqrt(1/n)"), (vb, vb_shape(n), "1/n")]:
                sub = np.array([best - self.J.get((het, x, method, Hm), (np.nan,))[0] for x in self.ns])
                line, = ax.plot(n, sub, marker="o", label=f"{method}, {het} (measured)")
                if np.isfinite(sub[-1]) and sub[-1] > 0:
                    ax.plot(n, scaled(shape, len(n) - 1, sub[-1]), "--", color=line.get_color(),
                            label=f"{label}, scaled to the point at n = {self.ns[-1]}")
        ax.set(xscale="log", xlabel="training prompts n", ylabel=f"suboptimality (J*_H - J_H)/H at H = {Hm}")
        _log_y(ax)
        _budget_ticks(ax, self.ns)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        self.captions.append((_save(fig, self.dir / "fig_f_theory.png"),
                              "(f) Measured suboptimality against the theory's shapes; each dashed curve is "
                              "the shape only, scaled to pass through the measured point at the largest n; the VB curve is the "
                              "best VB method at the largest n and H."))


def _table_html(rows_: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
                   for r in rows_)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    if v is None:
        return "not reached"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_report(study_dir: str | Path) -> Path:
    """Make every figure and `report.html` from the stored records of `study_dir`."""
    study_dir = Path(study_dir)
    study = load_study(study_dir)
    rep = Report(study, study_dir)
    if not rep.flat:
        raise ValueError(f"{study_dir}: no finished records to report")
    rep.fig_vs("H")
    rep.fig_vs("n")
    rep.fig_tokens()
    if rep.vb and any(r["method"] == rep.vf for r in rep.flat):
        rep.fig_gap()
        mult = rep.multipliers()
        rep.fig_multiplier(mult)
        if study.track == "didactic":  # one task, no heterogeneity axis and no J* on the LLM track
            rep.fig_gap_vs_het()
            rep.fig_theory()
    else:
        mult = []
    summary = [{"heterogeneity": k[0], "n": k[1], "method": k[2], "H": k[3], "J_H/H": v[0],
                "success@H": rep.S[k][0], "seeds": v[2]} for k, v in sorted(rep.J.items())]
    figs = "".join(f"<figure><img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
                   f"<figcaption>{html.escape(c)}</figcaption></figure>" for p, c in rep.captions)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in rep.notes)
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>veriscale: {html.escape(study.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}img{{max-width:100%}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}
figure{{margin:1.5em 0}}figcaption{{color:#444}}</style></head><body>
<h1>veriscale study: {html.escape(study.name)}</h1>
<p>Verifier-free ({html.escape(rep.vf)}) versus verifier-based ({html.escape(', '.join(rep.vb) or 'none')})
methods. {html.escape(study.describe())} {html.escape(rep._mode())}. Grid: budgets {rep.budgets}, n {rep.ns},
seeds {study.seeds}, {study.eval_prompts} held-out prompts per run.
Records: {len(rep.records)} of {rep.expected} runs finished.</p>
<h2>Findings (measured)</h2><ul>{notes or '<li>No VB-vs-VF gap could be computed from these records.</li>'}</ul>
{figs}
<h2>Compute and data multipliers</h2>{_table_html(mult, ["heterogeneity", "method", "axis", "at", "multiplier", "kind"])}
<h2>All results (mean over seeds)</h2>{_table_html(summary, ["heterogeneity", "n", "method", "H", "J_H/H",
                                                              "success@H", "seeds"])}
</body></html>"""
    out = study_dir / "report.html"
    out.write_text(doc)
    return out
