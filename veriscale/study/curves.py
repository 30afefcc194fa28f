"""Figure (h): the learners' training curves, read from the records (each evaluation record
carries its learners' curves, `study/learners.py: learner_summary`), so a reader sees whether the
verifier's held-out loss stopped falling and whether RL's training reward stopped rising.

Left: the verifier's validation loss at every evaluation, one line per (n, seed), the kept step
marked. Middle: its final-prefix AUC (does the score rank finished traces by correctness). Right:
the RL reward per step, a moving average over `SMOOTH` steps, one line per (method, n, seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from veriscale.study.analysis import Report
from veriscale.study.plotting import grid, legend, save

SMOOTH = 5  # steps in RL's moving average: one step's reward is a mean over only B x G traces


def _learner_runs(rep: Report, kind: str) -> dict[tuple, dict]:
    """(label, n, seed) -> the learner section `kind` of one record of that run; a verifier is
    keyed by its artifact, so the search methods that share it draw one line."""
    out: dict[tuple, dict] = {}
    for r in rep.records:
        c, sec = r["config"], (r.get("learner") or {}).get(kind)
        if not sec or not sec.get("curve"):
            continue
        key = ("verifier", c["n"], c["seed"], c["verifier"]) if kind == "verifier" else (c["method"], c["n"], c["seed"])
        out.setdefault(key, sec)
    return out


def fig_learners(rep: Report) -> tuple[Path, str] | None:
    """The figure, or None when no record carries a verifier or RL curve."""
    ver, rl = _learner_runs(rep, "verifier"), _learner_runs(rep, "rl")
    if not ver and not rl:
        return None
    fig, axes = grid(1, 3, 5.0, 3.8)
    loss_ax, auc_ax, rl_ax = axes[0]
    for (_, n, seed, _), sec in sorted(ver.items(), key=lambda kv: kv[0][:3]):
        steps = [p["step"] for p in sec["curve"]]
        line, = loss_ax.plot(steps, [p["heldout_loss"] for p in sec["curve"]], marker=".", label=f"n={n} seed {seed}")
        auc_ax.plot(steps, [p["heldout_auc_final"] for p in sec["curve"]], marker=".", color=line.get_color())
        kept = [p for p in sec["curve"] if p["step"] == sec["best_step"]]
        loss_ax.plot([p["step"] for p in kept], [p["heldout_loss"] for p in kept], "k*", ms=9)
    for (method, n, seed), sec in sorted(rl.items()):
        reward = np.array([p["reward"] for p in sec["curve"]])
        k = min(SMOOTH, len(reward))
        smooth = np.convolve(reward, np.ones(k) / k, mode="valid")
        rl_ax.plot(np.arange(k - 1, len(reward)), smooth, marker="." if len(smooth) < 20 else None, label=f"{method} n={n} seed {seed} ({sec['stopped']})")
    loss_ax.set(xlabel="step (-1 = start)", ylabel="validation loss", title="verifier: held-out loss (* kept)")
    auc_ax.set(xlabel="step", ylabel="AUC, final prefix vs success", title="verifier: final-prefix AUC")
    auc_ax.axhline(0.5, color="grey", lw=0.8)
    rl_ax.set(xlabel="step", ylabel=f"training reward ({SMOOTH}-step mean)", title="RL: training reward")
    for ax in (loss_ax, auc_ax, rl_ax):
        ax.grid(alpha=0.3)
    legend(loss_ax, 6)
    legend(rl_ax, 6)
    return (save(fig, rep.dir / "fig_h_learners.png"),
            f"(h) The learners' training curves: the verifier's validation loss (star: the kept step) and "
            f"final-prefix AUC at every evaluation, and RL's training reward per step ({SMOOTH}-step moving "
            f"mean; in brackets whether it stopped at a plateau or at its step cap).")
