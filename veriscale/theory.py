"""The theory's shapes, for overlay, and the statistics the study report states (and their wording).

Shapes (SPEC §1, predictions 1-3): VF suboptimality ~ sigma * sqrt(1/n); VB suboptimality ~ 1/n;
the VB - VF gap ~ H^alpha with alpha = 1/2 in the paper's regime. Constants are unknown, so a
shape is only ever drawn scaled to one measured point, and labelled as such.

Statistics: the unit of replication is the seed (it redraws the training data, the learner's
initialisation and the evaluation samples), so intervals are Student-t intervals over seeds and
power-law exponents are bootstrapped by resampling seeds, never the points of one curve.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
from scipy import stats


def vf_shape(n: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """sigma * sqrt(1/n): the VF (behaviour cloning) suboptimality rate."""
    return sigma * np.sqrt(1.0 / np.asarray(n, dtype=float))


def vb_shape(n: np.ndarray) -> np.ndarray:
    """1/n: the VB fast rate."""
    return 1.0 / np.asarray(n, dtype=float)


def scaled(shape: np.ndarray, at_index: int, measured: float) -> np.ndarray:
    """`shape` multiplied so that it passes through `measured` at position `at_index`."""
    return shape * (measured / shape[at_index])


def t_interval(values, level: float = 0.95) -> dict:
    """Mean of the finite `values` (one per seed) and its Student-t interval
    mean ± t_{(1+level)/2, k-1} · sd/sqrt(k); lo and hi are NaN with fewer than two values."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    k = len(v)
    if k == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "k": 0}
    mean = float(v.mean())
    if k < 2:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "k": 1}
    half = float(stats.t.ppf((1 + level) / 2, k - 1) * v.std(ddof=1) / math.sqrt(k))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "k": k}


def _slopes(lx: np.ndarray, ly: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Least-squares slope of ly on lx per row, over the entries of each row where `use` holds."""
    w = use.astype(float)
    cnt = w.sum(-1)
    mx = (w * lx).sum(-1) / cnt
    my = (w * np.where(use, ly, 0.0)).sum(-1) / cnt
    dx = lx - mx[..., None]
    return (w * dx * (np.where(use, ly, 0.0) - my[..., None])).sum(-1) / (w * dx**2).sum(-1)


def fit_power_law(x: list[float], per_seed: dict, *, boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> dict:
    """Exponent alpha of y ~ x^alpha: the slope of log(seed mean of y) on log x.

    `per_seed` maps each seed to its y at every x (NaN where that seed has no value). Per x the
    mean is over the seeds with a value; the fit uses every positive mean. Non-positive means
    cannot be logged: they are listed (x and value) in `nonpositive`, never dropped silently;
    x values no seed measured are listed in `missing`. A negative per-seed value still enters
    its mean (counted in `seed_values_nonpositive`).

    CI: the percentile interval of the slope over `boot` resamples of the seed set with
    replacement, each refitted the same way on its own positive means; draws with fewer than
    three positive means have no slope and are counted in `boot_too_few`. There is no CI
    (`ci_note` says why) with fewer than three positive means or a single seed; alpha needs two.
    """
    xs = np.asarray(x, dtype=float)
    if np.any(xs <= 0) or len(set(xs.tolist())) != len(xs):
        raise ValueError(f"fit_power_law: x must be distinct and positive, got {list(x)}")
    seeds = sorted(per_seed)
    Y = np.array([[math.nan if v is None else v for v in per_seed[s]] for s in seeds], dtype=float)
    Y = Y.reshape(len(seeds), len(xs))
    with warnings.catch_warnings():  # an x no seed measured has a NaN mean: listed as missing
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(Y, axis=0) if len(seeds) else np.full(len(xs), math.nan)
    pos = np.isfinite(means) & (means > 0)
    lx = np.log(xs)
    out = {"x": xs.tolist(), "mean": [float(m) for m in means], "seeds": len(seeds),
           "points": int(pos.sum()), "alpha": math.nan, "lo": math.nan, "hi": math.nan,
           "nonpositive": [{"x": float(a), "mean": float(m)} for a, m in zip(xs, means) if np.isfinite(m) and m <= 0],
           "missing": [float(a) for a, m in zip(xs, means) if not np.isfinite(m)],
           "seed_values_nonpositive": int(np.sum(np.isfinite(Y) & (Y <= 0))),
           "boot": 0, "boot_too_few": 0, "ci_note": None}
    if pos.sum() < 2:
        out["ci_note"] = "fewer than 2 positive means: no fit"
        return out
    out["alpha"] = float(_slopes(lx, np.log(np.where(pos, means, 1.0)), pos))
    if pos.sum() < 3:
        out["ci_note"] = "fewer than 3 positive means: no CI"
        return out
    if len(seeds) < 2:
        out["ci_note"] = "one seed: no seed-bootstrap CI"
        return out
    rng = np.random.default_rng(seed)
    draws = Y[rng.integers(0, len(seeds), (boot, len(seeds)))]  # (boot, seeds, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bm = np.nanmean(draws, axis=1)
    bpos = np.isfinite(bm) & (bm > 0)
    ok = bpos.sum(-1) >= 3
    slopes = _slopes(np.broadcast_to(lx, bm.shape)[ok], np.log(np.where(bpos, bm, 1.0))[ok], bpos[ok])
    out["boot"], out["boot_too_few"] = boot, int((~ok).sum())
    if len(slopes):
        tail = 100 * (1 - level) / 2
        out["lo"], out["hi"] = float(np.percentile(slopes, tail)), float(np.percentile(slopes, 100 - tail))
    else:
        out["ci_note"] = "no bootstrap draw had 3 positive means: no CI"
    return out


def diagonal(budgets: list[int], ns: list[int]) -> tuple[Fraction | None, list[tuple[int, int]]]:
    """The grid's points with data scaled with compute, n = c*H (the regime of the sqrt(H) gap):
    (c, pairs (H, n)) for the ratio c giving the most pairs, the smallest such c on ties; (None, [])
    when no ratio gives two pairs."""
    best: tuple[Fraction | None, list] = (None, [])
    for c in sorted({Fraction(n, H) for H in budgets for n in ns}):
        pairs = [(H, int(c * H)) for H in budgets if c * H in ns]
        if len(pairs) > len(best[1]):
            best = (c, pairs)
    return best if len(best[1]) >= 2 else (None, [])


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


# ---- how the report states a number ---------------------------------------------------------

def num(v, digits: int = 3) -> str:
    """A number for the report: 3 significant digits, 'n/a' when it is missing."""
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def fmt(iv: dict) -> str:
    """An interval dict as text that says what kind of interval it is."""
    if iv["k"] == 0:
        return "n/a (no record)" if iv["how"] == "missing" else "n/a (undefined in every seed)"
    m = num(iv["mean"])
    ci = f"{m} [{num(iv['lo'])}, {num(iv['hi'])}]"
    return {"t": ci, "crossed": ci, "within-run": f"{ci} (one seed: within-run)",
            "exact": f"{m} (by construction)"}.get(iv["how"], f"{m} (one seed: no interval)")


def band(d: dict) -> str:
    """A {value, lo, hi} dict (the diagnosis's own intervals) as text."""
    return f"{num(d['value'])} [{num(d['lo'])}, {num(d['hi'])}]"


def interval(values) -> dict:
    """t_interval of per-seed values, tagged with how its interval was made ("undefined": every
    seed's value is NaN, e.g. the spread of T in runs with fewer than two successes)."""
    values = list(values)
    iv = t_interval(values)
    return {**iv, "how": "t" if iv["k"] >= 2 else "none" if iv["k"] else "undefined" if values else "missing"}


def fit_text(fit: dict) -> str:
    """alpha, its CI and every excluded point, in words."""
    if not math.isfinite(fit["alpha"]):
        text = f"no fit ({fit['points']} positive seed mean(s), 2 needed)"
    elif math.isfinite(fit["lo"]):
        text = (f"alpha = {fit['alpha']:.2f}, 95% CI [{fit['lo']:.2f}, {fit['hi']:.2f}] (bootstrap over {fit['seeds']} "
                f"seeds, {fit['boot']} draws, {fit['boot_too_few']} with < 3 positive means), from {fit['points']} "
                "positive seed means")
    else:
        text = f"alpha = {fit['alpha']:.2f} ({fit['ci_note']}), from {fit['points']} positive seed means"
    if fit["nonpositive"]:
        text += (f"; {len(fit['nonpositive'])} non-positive mean(s) excluded: "
                 + ", ".join(f"x = {p['x']:g}: {num(p['mean'])}" for p in fit["nonpositive"]))
    if fit["missing"]:
        text += "; not measured at x = " + ", ".join(f"{x:g}" for x in fit["missing"])
    if fit["seed_values_nonpositive"]:
        text += f"; {fit['seed_values_nonpositive']} non-positive per-seed values averaged in"
    return text
