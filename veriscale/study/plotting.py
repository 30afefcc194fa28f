"""Plot helpers shared by the report's figures (veriscale/study/figures.py, curves.py): panels,
error bars that survive log axes, plain tick labels, legends that say when a panel is empty."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

MARKS = "Downward triangles on the bottom edge mark non-positive means (values in the findings)."
MARKERS = "osD^vPX*<>"


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ticks(ax, xs) -> None:
    """Plain tick labels at the measured x values of a log axis, all of them in view (a panel may
    have nothing drawable at some x)."""
    ax.set_xticks(list(xs), [str(x) for x in xs])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlim(min(xs) / 1.15, max(xs) * 1.15)


def plain(axis, subs=(1, 2, 5)) -> None:
    """Plain numbers at subs x 10^k instead of powers of ten on a log axis."""
    axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def arrays(ivs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(means, lower error, upper error); a missing bound draws no bar on that side."""
    m, lo, hi = (np.array([iv[k] for iv in ivs], dtype=float) for k in ("mean", "lo", "hi"))
    return m, np.nan_to_num(m - lo, nan=0.0), np.nan_to_num(hi - m, nan=0.0)


def points(ax, xs, ivs: list[dict], log: bool = True, **kw) -> str:
    """Means with error bars; on a log y axis, only positive means, lower bars clipped above 0,
    and a triangle on the bottom edge for each non-positive mean. Returns the curve's colour."""
    x = np.asarray(xs, dtype=float)
    m, el, eh = arrays(ivs)
    keep = np.isfinite(m) & (m > 0) if log else np.isfinite(m)
    if log:
        el = np.minimum(el, 0.999 * np.where(keep, m, 1.0))
    bars = ax.errorbar(x[keep], m[keep], yerr=[el[keep], eh[keep]], capsize=3, **{"marker": "o", **kw})
    if bars[1]:  # a lower bound near 0 must not stretch a log axis: log_y ignores these caps
        bars[1][0].set_gid("lower")
    color = bars[0].get_color()
    bad = np.isfinite(m) & (m <= 0)
    if log and bad.any():
        ax.scatter(x[bad], np.full(int(bad.sum()), 0.02), marker="v", s=50, color=color,
                   transform=ax.get_xaxis_transform(), clip_on=False, zorder=3)
    return color


def log_y(ax) -> None:
    """Log y when a positive value was drawn, its bottom set by the lowest positive mean or shape
    (lower error bars reaching further down are cut at the edge); otherwise stay linear and say so."""
    ys = np.array([y for line in ax.get_lines() if line.get_gid() != "lower"
                   for y in np.asarray(line.get_ydata(), dtype=float)])
    ys = ys[np.isfinite(ys) & (ys > 0)]
    if len(ys):
        ax.set_yscale("log")
        ax.set_ylim(bottom=ys.min() / 1.5)
        span = ys.max() / ys.min()
        plain(ax.yaxis, tuple(range(1, 10)) if span < 10 else (1, 2, 5) if span < 1e3 else (1,))
    else:
        ax.text(0.5, 0.5, "no positive mean to draw on a log axis", transform=ax.transAxes, ha="center")


def finish_log_log(ax, xs) -> None:
    """Log y (when anything positive was drawn), ticks at the measured x values, grid, legend."""
    log_y(ax)
    ticks(ax, xs)
    ax.grid(alpha=0.3)
    legend(ax, 7)


def legend(ax, size: int) -> None:
    """A legend, or a note that the panel has nothing to draw (the findings say why)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=size)
    else:
        ax.text(0.5, 0.6, "nothing to draw here (see the findings)", transform=ax.transAxes, ha="center")


def alpha_text(fit: dict) -> str:
    """A fit's exponent and CI, short enough for a legend."""
    if not np.isfinite(fit["alpha"]):
        return "no fit"
    ci = f" [{fit['lo']:.2f}, {fit['hi']:.2f}]" if np.isfinite(fit["lo"]) else " (no CI)"
    return f"α = {fit['alpha']:.2f}{ci}"


def anchor(fit: dict) -> tuple[float, float] | None:
    """The largest x with a positive mean: where a theory shape is pinned."""
    pts = [(x, m) for x, m in zip(fit["x"], fit["mean"]) if np.isfinite(m) and m > 0]
    return pts[-1] if pts else None


def grid(rows: int, cols: int, w: float = 5.0, h: float = 3.8):
    """A figure of rows x cols panels of w x h inches each (axes always a 2-D array)."""
    return plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
