"""The interval of a verdict's measured difference: a bootstrap over seeds and prompts where the
records keep each problem's outcome, a t-interval over seeds where they do not.

A contrast is a weighted sum of grid cells' means, sum_i w_i · mean(cell_i): a difference of two
methods (weights +1, -1), or a difference of two gaps (four cells). Every seed of a study is
evaluated on the same held-out prompts, and every method too, so the contrast is formed per seed
and per prompt first, X[s, p] = sum_i w_i · x_i[s, p], and each resample draws one set of seeds and
one set of prompt indices, both with replacement, for all cells at once: paired by seed and by
prompt. The prompts are crossed with the seeds (one held-out set for all of them), so one prompt
draw serves every resampled seed: a prompt's difficulty moves all seeds alike, and its share of
the variance does not shrink with more seeds. A resample's value is a mean of observed outcomes,
so a success rate's interval stays inside [0, 1].
"""

from __future__ import annotations

import math

import numpy as np

from veriscale.theory import interval

BOOT = 2000  # resamples per interval (ours): the 2.5% quantile then sits on about 50 draws
SEED = 0  # the bootstrap's generator seed: the report is deterministic
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


def bootstrap(X: np.ndarray, boot: int = BOOT, seed: int = SEED, level: float = LEVEL) -> dict:
    """Mean of X (S seeds, P prompts) and the percentile interval of its mean over `boot` resamples
    of seeds and of prompts (one prompt draw per resample, shared by the seeds). A resample's mean
    is sum_{s,p} a_s X[s, p] b_p / (S·P) with a, b the resampled seeds' and prompts' counts."""
    S, P = X.shape
    rng = np.random.default_rng(seed)
    a = rng.multinomial(S, np.full(S, 1 / S), size=boot)  # (boot, S) times each seed is drawn
    b = rng.multinomial(P, np.full(P, 1 / P), size=boot)  # (boot, P) times each prompt is drawn
    draws = np.einsum("bs,sp,bp->b", a, X, b) / (S * P)
    tail = (1 - level) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail])
    return {"mean": float(X.mean()), "lo": float(lo), "hi": float(hi), "k": S, "how": "bootstrap",
            "prompts": P, "boot": boot}


def contrast(terms: list[tuple[float, dict[int, dict]]], key: str, samples: int) -> dict | None:
    """Interval of sum_i w_i · mean(cell_i) over the seeds every cell has; `terms` are (w_i, seed ->
    budget row of cell i), `samples` the problems per prompt. The bootstrap (`bootstrap`) where every
    row keeps per-problem outcomes of one length; otherwise the t-interval over seeds of the
    per-seed contrast (`how` says which). None when the cells share no seed."""
    seeds = sorted(set.intersection(*(set(rows) for _, rows in terms)))
    if not seeds:
        return None
    per = [[outcomes(rows[s], key, samples) for s in seeds] for _, rows in terms]
    if any(x is None for xs in per for x in xs) or len({x.shape for xs in per for x in xs}) != 1:
        return interval([sum(w * rows[s].get(key, math.nan) for w, rows in terms) for s in seeds])
    return bootstrap(sum(w * np.stack(xs) for (w, _), xs in zip(terms, per)))


def words(iv: dict) -> str:
    """How an interval was made, for a verdict row."""
    seeds = f"{iv['k']} seed{'s' * (iv['k'] != 1)}"
    if iv.get("how") == "bootstrap":
        return (f"95% bootstrap over {seeds} and {iv['prompts']} prompts, paired by seed and prompt, "
                f"{iv['boot']} resamples")
    return f"95% t-interval over {seeds}, paired by seed (records without per-problem outcomes)"
