"""The theory's shapes, for overlay, and the two fits the report makes against measurements.

Shapes (SPEC §1, predictions 1-3): VF suboptimality ~ sigma * sqrt(1/n); VB suboptimality ~ 1/n;
the VB - VF gap ~ H^alpha with alpha = 1/2 in the paper's regime. Constants are unknown, so a
shape is only ever drawn scaled to one measured point, and labelled as such.
"""

from __future__ import annotations

import math

import numpy as np


def vf_shape(n: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """sigma * sqrt(1/n): the VF (behaviour cloning) suboptimality rate."""
    return sigma * np.sqrt(1.0 / np.asarray(n, dtype=float))


def vb_shape(n: np.ndarray) -> np.ndarray:
    """1/n: the VB fast rate."""
    return 1.0 / np.asarray(n, dtype=float)


def scaled(shape: np.ndarray, at_index: int, measured: float) -> np.ndarray:
    """`shape` multiplied so that it passes through `measured` at position `at_index`."""
    return shape * (measured / shape[at_index])


def fit_power_law(x: list[float], y: list[float], *, boot: int = 2000, seed: int = 0) -> dict:
    """Slope alpha of log y = alpha log x + b over the points with y > 0, with a 95% bootstrap CI
    (resampling points; needs at least 3 points, else the CI is NaN). Returns alpha, lo, hi,
    points used, points excluded (y <= 0)."""
    pts = [(a, b) for a, b in zip(x, y) if b > 0 and a > 0]
    out = {"alpha": math.nan, "lo": math.nan, "hi": math.nan, "points": len(pts), "excluded": len(x) - len(pts)}
    lx = np.log([p[0] for p in pts])
    ly = np.log([p[1] for p in pts])
    if len(pts) < 2 or np.ptp(lx) == 0:
        return out
    out["alpha"] = float(np.polyfit(lx, ly, 1)[0])
    if len(pts) < 3:
        return out
    rng = np.random.default_rng(seed)
    slopes = []
    for _ in range(boot):
        idx = rng.integers(0, len(pts), len(pts))
        if np.ptp(lx[idx]) > 0:
            slopes.append(np.polyfit(lx[idx], ly[idx], 1)[0])
    if slopes:
        out["lo"], out["hi"] = float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5))
    return out


def crossing(xs: list[float], ys: list[float], target: float) -> float | None:
    """Smallest x at which the curve (xs increasing) reaches `target`, interpolating linearly in
    log x between measured points; None when it never does ("not reached")."""
    for i, (x, y) in enumerate(zip(xs, ys)):
        if y >= target:
            if i == 0:
                return float(x)
            x0, y0 = xs[i - 1], ys[i - 1]
            frac = (target - y0) / (y - y0) if y != y0 else 1.0
            return float(math.exp(math.log(x0) + frac * (math.log(x) - math.log(x0))))
    return None
