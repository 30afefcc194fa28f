"""The study report's figures, drawn from the numbers `analysis.Report` computed (never from traces).

Every figure is a PNG in the study directory with a caption that names the mode that produced it.
On log axes a non-positive mean cannot be drawn: it is marked by a downward triangle along the
bottom edge in its curve's colour, and its value is stated in the findings and summary.json.
Error bars are the cells' intervals (Report.iv: returns and success rates 95% t over seeds and
prompts where the records keep per-problem outcomes; otherwise over seeds, one seed within-run).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from veriscale.study.analysis import Report
from veriscale.study.methods import search_bases
from veriscale.study.plotting import (MARKERS, MARKS, alpha_text, anchor, finish_log_log, grid, legend, log_y, plain,
                                      points, save, ticks)
from veriscale.theory import scaled, vb_shape, vf_shape


def method_style(k: int) -> dict:
    """The colour and marker of the k-th method label, the same in every figure that shows
    all methods (up to 20, each its own)."""
    return {"color": plt.get_cmap("tab20")(k % 20), "marker": MARKERS[k % len(MARKERS)]}


def fig_vs(rep: Report, along: str) -> tuple[Path, str]:
    """J_H/H and success@H of every method against H (largest n) or n (largest H)."""
    xs = rep.budgets if along == "H" else rep.ns
    fig, axes = grid(2, len(rep.hets))
    for j, het in enumerate(rep.hets):
        for i, (key, name) in enumerate([("J_norm", "J_H / H"), ("success", "success@H")]):
            ax = axes[i][j]
            for k, m in enumerate(rep.labels):
                cells = [(x, (het, rep.nmax, m, x) if along == "H" else (het, x, m, rep.Hmax)) for x in xs]
                cells = [(x, c) for x, c in cells if c in rep.cells]
                if cells:
                    points(ax, [x for x, _ in cells], [rep.iv(*c, key) for _, c in cells], log=False,
                           label=rep.legend(m), **method_style(k))
            ax.set_xscale("log", base=2)
            ticks(ax, xs)
            fixed = f"n = {rep.nmax}" if along == "H" else f"H = {rep.Hmax}"
            ax.set(xlabel="budget H (tokens)" if along == "H" else "training prompts n", ylabel=name,
                   title=f"{rep.where(het)}, {fixed}")
            ax.grid(alpha=0.3)
    legend(axes[0][0], 7)
    name = "fig_a_vs_H.png" if along == "H" else "fig_b_vs_n.png"
    cap = ("(a) J_H/H and success@H against the budget H" if along == "H" else
           "(b) J_H/H and success@H against the data size n") + f"; {rep.mode()}."
    return save(fig, rep.dir / name), cap


def fig_tokens(rep: Report) -> tuple[Path, str]:
    """Success against the tokens each method actually spent, one point per budget."""
    fig, axes = grid(1, len(rep.hets), 6.0, 4.5)
    for ax, het in zip(axes[0], rep.hets):
        for k, m in enumerate(rep.labels):
            cells = [(het, rep.nmax, m, H) for H in rep.budgets if (het, rep.nmax, m, H) in rep.cells]
            if cells:
                tok = [rep.iv(*c, "tokens")["mean"] for c in cells]
                points(ax, tok, [rep.iv(*c, "success") for c in cells], log=False, label=rep.legend(m),
                       **method_style(k))
        ax.set(xscale="log", xlabel="tokens drawn per problem (mean)", ylabel="success@H",
               title=f"{rep.where(het)}, n = {rep.nmax}")
        plain(ax.xaxis)
        ax.grid(alpha=0.3)
        legend(ax, 7)
    return (save(fig, rep.dir / "fig_tokens.png"),
            f"Success against the tokens actually drawn per problem, one point per budget H; {rep.mode()}.")


def fig_suboptimality(rep: Report, entries: list[dict]) -> tuple[Path, str]:
    """VF and VB suboptimality against n (log-log) with their fits and the theory's shapes."""
    fig, axes = grid(2, len(rep.hets))
    ns = np.array(rep.ns, dtype=float)
    for j, het in enumerate(rep.hets):
        for i, kind in enumerate(["VF", "VB"]):
            ax = axes[i][j]
            for e in (e for e in entries if e["heterogeneity"] == het and e["kind"] == kind):
                color = points(ax, rep.ns, e["points"], label=f"{e['method']}: {alpha_text(e['fit'])}")
                if (a := anchor(e["fit"])) is not None:
                    shape = vf_shape(ns) if kind == "VF" else vb_shape(ns)
                    ax.plot(ns, scaled(shape, rep.ns.index(int(a[0])), a[1]), "--", color=color, lw=1,
                            label=f"n^{e['theory_slope']:g} shape through n = {a[0]:g}")
            ax.set(xscale="log", xlabel="training prompts n", title=f"{kind}, {rep.where(het)}, H = {rep.Hmax}",
                   ylabel="J_H(expert) - J_H(sft)  (tokens)" if kind == "VF" else "J*_H - J_H(VB)  (tokens)")
            finish_log_log(ax, rep.ns)
    return (save(fig, rep.dir / "fig_d_suboptimality_vs_n.png"),
            "(d) Suboptimality against n at H_max: VF (the expert's return minus SFT's; theory slope -1/2) and the "
            "data-matched VB methods (J*_H = H - m + 1 minus their return; theory slope -1). Dashed: the theory's "
            f"shape only, scaled through the largest-n positive mean. α: seed-bootstrap 95% CI. {MARKS} {rep.mode()}.")


def fig_gap(rep: Report, entries: list[dict], setting: str) -> tuple[Path, str]:
    """VB - VF gap vs H in tokens (log-log, with slope-1 and slope-1/2 references) and the success gap."""
    fig, axes = grid(len(rep.hets), 2, 6.0, 4.2)
    for i, het in enumerate(rep.hets):
        ax, ax2 = axes[i]
        anchors = []
        for e in (e for e in entries if e["heterogeneity"] == het):
            H = [p["H"] for p in e["points"]]
            color = points(ax, H, [p["J_gap"] for p in e["points"]], label=f"{e['method']}: {alpha_text(e['fit'])}")
            points(ax2, H, [p["success_gap"] for p in e["points"]], log=False, color=color, label=e["method"])
            if (a := anchor(e["fit"])) is not None:
                anchors.append(a)
        if anchors:  # reference slopes through the median of the curves' positive means at the largest such H
            x0 = max(a[0] for a in anchors)
            y0 = float(np.median([a[1] for a in anchors if a[0] == x0]))
            Hs = np.array(rep.budgets, dtype=float)
            for slope, style in ((1.0, "k:"), (0.5, "k--")):
                ax.plot(Hs, y0 * (Hs / x0) ** slope, style, lw=1, label=f"slope {slope:g} (shape)")
        pairs = "" if setting == "fixed_n" else ", ".join(f"({p['H']},{p['n']})" for p in entries[0]["points"])
        where = f"n = {rep.nmax}" if setting == "fixed_n" else f"n = {rep.c}·H: (H, n) = {pairs}"
        ax.set(xscale="log", xlabel="budget H", ylabel=f"J_H(VB) - J_H({rep.vf})  (tokens)",
               title=f"return gap, {rep.where(het)}, {where}")
        log_y(ax)
        ax2.set(xscale="log", xlabel="budget H", ylabel=f"success@H(VB) - success@H({rep.vf})",
                title=f"success gap, {rep.where(het)}")
        ax2.axhline(0, color="grey", lw=0.8)
        for a in (ax, ax2):
            ticks(a, rep.budgets)
            a.grid(alpha=0.3)
            legend(a, 7)
    name = "fig_c_gap_vs_H.png" if setting == "fixed_n" else "fig_c2_gap_vs_H_diagonal.png"
    what = (f"at fixed n = {rep.nmax}" if setting == "fixed_n" else
            f"on the diagonal n = {rep.c}·H (data grows with compute; pairs (H, n) in the titles)")
    return (save(fig, rep.dir / name),
            f"(c) Gap of each VB method over {rep.vf} {what}: return gap in tokens on log-log axes with its "
            f"exponent α (seed-bootstrap 95% CI) and reference slopes 1 and 1/2 (shapes only), and the success@H "
            f"gap (linear). {MARKS} {rep.mode()}.")


def fig_best_of_n(rep: Report) -> tuple[Path, str]:
    """Best-of-N search under each accounting the study ran, with the base policy and SFT for
    reference, and the tokens each accounting actually draws."""
    bases = search_bases(rep.labels)
    accs = [a for a in ("shared", "per_sample") if any(m.endswith(f":{a}") for m in rep.labels)]
    N, n, last = rep.study.samples_per_problem, rep.nmax, len(accs)
    fig, axes = grid(2 * len(rep.hets), last + 1, 5.0, 3.6)
    colors, styles, marks = {b: f"C{i}" for i, b in enumerate(bases)}, {"shared": "-", "per_sample": "--"}, \
        {"shared": "o", "per_sample": "s"}
    for i, het in enumerate(rep.hets):
        top, bottom = axes[2 * i], axes[2 * i + 1]
        for col, acc in enumerate(accs):
            for row, key, name in ((top, "success", "success@H"), (bottom, "J_norm", "J_H / H")):
                ax = row[col]
                for m, color in [*((f"{b}:{acc}", colors[b]) for b in bases), ("base", "grey"), (rep.vf, "black")]:
                    cells = [(het, n, m, H) for H in rep.budgets if (het, n, m, H) in rep.cells]
                    if cells:
                        points(ax, [c[3] for c in cells], [rep.iv(*c, key) for c in cells], log=False, color=color,
                                ls="-" if ":" in m else "--", label=m)
                ax.set(xscale="log", xlabel="budget H", ylabel=name,
                       title=f"{name}, accounting {acc}, {rep.where(het)}")
                ticks(ax, rep.budgets)
            for b in bases:
                cells = [(het, n, f"{b}:{acc}", H) for H in rep.budgets if (het, n, f"{b}:{acc}", H) in rep.cells]
                if cells:
                    tok = [rep.iv(*c, "tokens")["mean"] for c in cells]
                    kw = {"marker": marks[acc], "color": colors[b], "ls": styles[acc], "label": f"{b}:{acc}"}
                    top[last].plot(tok, [rep.iv(*c, "success")["mean"] for c in cells], **kw)
                    bottom[last].plot([c[3] for c in cells], tok, **kw)
        Hs = np.array(rep.budgets, dtype=float)
        bottom[last].plot(Hs, Hs, "k:", lw=1, label="H")
        bottom[last].plot(Hs, N * Hs, "k--", lw=1, label=f"N·H (N = {N})")
        top[last].set(xscale="log", xlabel="tokens drawn per problem (mean)", ylabel="success@H",
                      title=f"success vs tokens drawn, {rep.where(het)}")
        bottom[last].set(xscale="log", yscale="log", xlabel="budget H", ylabel="tokens drawn per problem",
                         title=f"tokens drawn vs H, {rep.where(het)}")
        ticks(bottom[last], rep.budgets)
        plain(top[last].xaxis)
        plain(bottom[last].yaxis)
        for ax in [*top, *bottom]:
            ax.grid(alpha=0.3)
            legend(ax, 6)
    return (save(fig, rep.dir / "fig_f_best_of_n_accounting.png"),
            f"(f) Best-of-{N} search at n = {n} under the accountings {', '.join(accs)}: shared (the N samples share "
            f"H, floor(H/N) tokens each) and per_sample (each sample gets H: N·H tokens drawn, scored with J_H); "
            f"base and {rep.vf} for reference (dashed). Right: success against the tokens actually drawn (solid "
            f"shared, dashed per_sample), and the tokens drawn against H. {rep.mode()}.")


def fig_sigma_vs_H(rep: Report, entries: list[dict]) -> tuple[Path, str]:
    """Horizon mode: measured sigma(T) of the expert and base policy vs H, against H^beta."""
    fig, axes = grid(1, len(rep.hets), 5.5, 4.2)
    Hs = np.array(rep.budgets, dtype=float)
    for ax, het in zip(axes[0], rep.hets):
        for e in (e for e in entries if e["heterogeneity"] == het):
            color = points(ax, rep.budgets, e["points"], label=f"{e['method']}: {alpha_text(e['fit'])}")
            beta = e["configured_beta"]
            if e["method"] == "expert" and beta and (a := anchor(e["fit"])) is not None:
                ax.plot(Hs, a[1] * (Hs / a[0]) ** beta, "--", color=color, lw=1,
                        label=f"H^{beta:g} (configured β; shape through H = {a[0]:g})")
        ax.set(xscale="log", xlabel="horizon H", ylabel="sigma(T) over successful traces (tokens)",
               title=f"{rep.where(het)}")
        finish_log_log(ax, rep.budgets)
    return (save(fig, rep.dir / "fig_g_sigma_vs_H.png"),
            "(g) Measured length heterogeneity sigma(T) of the expert and the base policy against the horizon, "
            f"with its exponent (seed-bootstrap 95% CI) and the configured H^β shape. {MARKS} {rep.mode()}.")


def fig_vs_sigma(rep: Report) -> tuple[Path, str] | None:
    """Bases of controlled heterogeneity (a text study's shaped bases): J_H/H of the VF reference
    and of every VB method at (n_max, H_max) against each base's measured σ/H, and the VB − VF
    return gap (paired by seed and prompt); None with fewer than two diagnosed bases."""
    bases = [(het, rep.diag[(het, rep.Hmax)]["sigma_over_H"]) for het in rep.hets if (het, rep.Hmax) in rep.diag]
    if rep.didactic or len(bases) < 2:
        return None
    fig, axes = grid(1, 2, 6.0, 4.5)
    ax, ax2 = axes[0]
    x = [b["value"] for _, b in bases]
    xerr = [[b["value"] - b["lo"] for _, b in bases], [b["hi"] - b["value"] for _, b in bases]]
    for k, m in enumerate([rep.vf, *rep.vb_chosen]):
        cells = [(het, rep.nmax, m, rep.Hmax) for het, _ in bases]
        if all(c in rep.cells for c in cells):
            points(ax, x, [rep.iv(*c, "J_norm") for c in cells], log=False, label=rep.legend(m),
                   marker=MARKERS[k % len(MARKERS)], xerr=xerr, color=f"C{k % 10}")
        if m != rep.vf and all(c in rep.cells for c in cells) and all((h, rep.nmax, rep.vf, rep.Hmax) in rep.cells
                                                                      for h, _ in bases):
            gaps = [rep.contrast("J", [(1.0, c), (-1.0, (c[0], c[1], rep.vf, c[3]))]) for c in cells]
            points(ax2, x, [g or {"mean": np.nan, "lo": np.nan, "hi": np.nan} for g in gaps], log=False, label=m,
                   marker=MARKERS[k % len(MARKERS)], color=f"C{k % 10}")
    for a, ylabel in ((ax, "J_H / H"), (ax2, f"J_H(VB) - J_H({rep.vf})  (tokens)")):
        a.set(xlabel="base σ(R_H)/H (diagnosis, root-mean-square over prompts)", ylabel=ylabel,
              title=f"n = {rep.nmax}, H = {rep.Hmax}")
        for (het, _), xv in zip(bases, x):
            a.annotate(het, (xv, 0.02), xycoords=("data", "axes fraction"), ha="center", fontsize=8)
        a.grid(alpha=0.3)
        legend(a, 7)
    ax2.axhline(0, color="grey", lw=0.8)
    return (save(fig, rep.dir / "fig_i_vs_sigma.png"),
            f"(i) Each base of controlled heterogeneity at its measured σ/H (bootstrap 95% interval over prompts): "
            f"J_H/H of {rep.vf} and of each VB method (left) and the VB − VF return gap, paired by seed and prompt "
            f"(right). The theory: VF falls further behind VB as σ grows. {rep.mode()}.")


def fig_multiplier(rep: Report, mult: list[dict]) -> tuple[Path, str]:
    """How many times more tokens / data the VF reference needs to reach each VB method's success."""
    fig, axes = grid(1, 2, 5.5, 4.2)
    for ax, axis in zip(axes[0], ["tokens", "data"]):
        for het in rep.hets:
            for m in rep.vb:
                pts = [p for p in mult if p["axis"] == axis and p["heterogeneity"] == het and p["method"] == m]
                ys = [np.nan if p["multiplier"] is None else p["multiplier"] for p in pts]
                line, = ax.plot([p["at"] for p in pts], ys, marker="o", label=f"{m}, {het}")
                miss = [p["at"] for p in pts if p["multiplier"] is None]
                # "not reached" has no value: a cross along the top edge of the panel
                ax.scatter(miss, [0.97] * len(miss), marker="x", s=50, color=line.get_color(),
                           transform=ax.get_xaxis_transform(), clip_on=False)
        ax.set(xscale="log", xlabel="budget H" if axis == "tokens" else "data n", ylabel=f"x more {axis} VF needs",
               title=f"{axis} multiplier (x on top = VF never reaches it)")
        log_y(ax)
        ticks(ax, rep.budgets if axis == "tokens" else rep.ns)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.grid(alpha=0.3)
        legend(ax, 6)
    return (save(fig, rep.dir / "fig_e_multiplier.png"),
            f"(e) How many times more test-time tokens (left, at n = {rep.nmax}) or training prompts (right, at "
            f"H = {rep.Hmax}) {rep.vf} needs to reach each VB method's mean success, interpolated in log x, over what "
            f"the VB method was allowed (N·H tokens for a per-sample method); a cross along the top: never within the grid; below 1, VF needs less. {rep.mode()}.")


def draw_all(rep: Report, s: dict) -> list[tuple[Path, str]]:
    """Every figure the records support, as (path, caption), in reading order."""
    figs = [fig_vs(rep, "H"), fig_vs(rep, "n"), fig_tokens(rep)]
    if s.get("suboptimality"):
        figs.append(fig_suboptimality(rep, s["suboptimality"]))
    for setting in ("fixed_n", "diagonal"):
        if entries := [g for g in s["gap_vs_H"] if g["setting"] == setting]:
            figs.append(fig_gap(rep, entries, setting))
    if any(":" in m for m in rep.labels):
        figs.append(fig_best_of_n(rep))
    if s.get("sigma_vs_H"):
        figs.append(fig_sigma_vs_H(rep, s["sigma_vs_H"]))
    if s["multipliers"]:
        figs.append(fig_multiplier(rep, s["multipliers"]))
    return figs + [f for f in [fig_vs_sigma(rep)] if f is not None]
