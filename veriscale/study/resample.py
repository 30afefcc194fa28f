"""The interval of a verdict's measured difference: over seeds and prompts where the records keep
each problem's outcome, over seeds alone where they do not.

A contrast is a weighted sum of grid cells' means, sum_i w_i · mean(cell_i): a difference of two
methods (weights +1, -1), or a difference of two gaps (four cells). Every seed of a study is
evaluated on the same held-out prompts, and every method too, so the contrast is formed per seed
and per prompt first, X[s, p] = sum_i w_i · x_i[s, p]: paired by seed and by prompt. Seeds and
prompts are crossed (one held-out set for every seed), so the mean's variance has a seed part and
a prompt part that more seeds do not shrink; the interval adds their estimates,
var(seed means)/S + var(prompt means)/P (each also holds the residual, so the sum is on the safe
side), and takes the Student-t quantile with S - 1 degrees of freedom (P - 1 with one seed): with
few seeds, the width a few seeds can support. It is cut to the contrast's possible range (a
success rate's interval stays inside [0, 1]).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from veriscale.theory import interval

LEVEL = 0.95


def outcomes(row: dict, key: str, samples: int) -> np.ndarray | None:
    """(P,) a budget row's per-prompt mean of `key` from its per-problem first-success indices:
    R = H - T + 1 (0 where it failed) for J, R/H for J_norm, 1[success] for success; problem b is
    prompt b // samples. None when the row keeps no per-problem outcomes (an older record)."""
    T = row.get("T_per_problem")
    if T is None:
        return None
    H = row["budget"]
    R = np.array([0.0 if t is None else H - t + 1 for t in T])  # (B,), >= 1 where it succeeded
    x = {"J": R, "J_norm": R / H, "success": (R > 0).astype(float)}[key]
    return x.reshape(-1, samples).mean(1)


def crossed_interval(X: np.ndarray, low: float, high: float, level: float = LEVEL) -> dict:
    """Mean of X (S seeds, P prompts) with its interval over seeds and prompts (module docstring),
    cut to [low, high], the range the contrast can take."""
    S, P = X.shape
    var = (X.mean(1).var(ddof=1) / S if S > 1 else 0.0) + (X.mean(0).var(ddof=1) / P if P > 1 else 0.0)
    half = stats.t.ppf(0.5 + level / 2, S - 1 if S > 1 else max(P - 1, 1)) * math.sqrt(var)
    mean = float(X.mean())
    return {"mean": mean, "lo": max(mean - half, low), "hi": min(mean + half, high), "k": S, "how": "crossed",
            "prompts": P}


def contrast(terms: list[tuple[float, dict[int, dict]]], key: str, samples: int) -> dict | None:
    """Interval of sum_i w_i · mean(cell_i) over the seeds every cell has; `terms` are (w_i, seed ->
    budget row of cell i), `samples` the problems per prompt. Over seeds and prompts
    (`crossed_interval`) where every row keeps per-problem outcomes of one length; otherwise the
    t-interval over seeds of the per-seed contrast (`how` says which). None when the cells share no seed."""
    seeds = sorted(set.intersection(*(set(rows) for _, rows in terms)))
    if not seeds:
        return None
    per = [[outcomes(rows[s], key, samples) for s in seeds] for _, rows in terms]
    if any(x is None for xs in per for x in xs) or len({x.shape for xs in per for x in xs}) != 1:
        return interval([sum(w * rows[s].get(key, math.nan) for w, rows in terms) for s in seeds])
    # each cell lies in [0, top]: H tokens for J, 1 for J_norm and success
    tops = [rows[seeds[0]]["budget"] if key == "J" else 1.0 for _, rows in terms]
    low = sum(min(w * top, 0.0) for (w, _), top in zip(terms, tops))
    high = sum(max(w * top, 0.0) for (w, _), top in zip(terms, tops))
    return crossed_interval(sum(w * np.stack(xs) for (w, _), xs in zip(terms, per)), low, high)


def words(iv: dict) -> str:
    """How an interval was made, for a verdict row."""
    seeds = f"{iv['k']} seed{'s' * (iv['k'] != 1)}"
    if iv.get("how") == "crossed":
        return f"95% t-interval over {seeds} and {iv['prompts']} prompts, paired by seed and prompt"
    return f"95% t-interval over {seeds}, paired by seed (records without per-problem outcomes)"
