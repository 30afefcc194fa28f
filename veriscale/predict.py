"""The diagnosis's prediction of the VB - VF gap before any training (SPEC §1, "Prediction").

The theory (SPEC §1, claims 1-2) gives two sides, each measurable before training:
- VB side: under anti-concentration, selecting with a verifier lifts the base policy above its mean
  return by about its heterogeneity scale. We take the lift that N samples secure when a share c of
  traces scores at least margin(eps) sigma above the mean: the chance that one of N does, times that
  margin: J_VB = min(H, J_base + margin(eps) sigma_base (1 - (1 - c)^N)).
- VF side: cloning reproduces the data it clones, less a statistical loss that grows with that
  data's heterogeneity: J_VF = J_data - sigma_data sqrt(kappa / n) (kappa stands for log|Pi|).
- predicted gap(H) = J_VB - J_VF in tokens, at every budget H where both sides are measured.

sigma here is the sd of R_H over all traces (pooled over prompts): VF data often has one trace
per prompt, and the study records carry the pooled sd at every budget. Each input is a band
{value, lo, hi}; the gap's interval adds in quadrature how far each input, moved to either end of
its band, moves the gap (independent errors). N, kappa and the margin are knobs (ours; documented
in docs/diagnostics.md): `veriscale config diagnose`.

Read as: sign of the gap at the largest budget ("VB ahead" when its interval is above 0, "VF
ahead" when below, else "uncertain"), and its growth: gap(H_max) - gap(H_min), with the same rule.
"""

from __future__ import annotations

import math

import torch

from veriscale.rewards import returns


def band_of(value: float, lo: float | None = None, hi: float | None = None) -> dict:
    """{value, lo, hi}; a missing or non-finite bound is the value itself (no interval known)."""
    ok = lambda b: b is not None and math.isfinite(b)  # noqa: E731
    return {"value": value, "lo": lo if ok(lo) else value, "hi": hi if ok(hi) else value}


def lift(sigma: float, c: float, N: int, margin: float) -> float:
    """Return gained over the base's mean by the best of N samples under anti-concentration c."""
    return margin * sigma * (1.0 - (1.0 - min(max(c, 0.0), 1.0)) ** N)


def gap(H: int, base_J: dict, base_sigma: dict, vf_J: dict, vf_sigma: dict, c: dict, *, n: int, N: int,
        margin: float, kappa: float) -> dict:
    """Predicted J_H(VB) - J_H(VF) in tokens at budget H, with its interval: each input moved to
    either end of its band moves the gap; the moves down (up) add in quadrature into the lower
    (upper) half-width, as for independent errors."""
    def at(x: dict) -> float:
        vb_return = min(float(H), x["base_J"] + lift(x["base_sigma"], x["c"], N, margin))
        vf_return = x["vf_J"] - x["vf_sigma"] * math.sqrt(kappa / n)  # more VF heterogeneity: more VF loss
        return vb_return - vf_return

    bands = {"base_J": base_J, "base_sigma": base_sigma, "vf_J": vf_J, "vf_sigma": vf_sigma, "c": c}
    mid = {k: b["value"] for k, b in bands.items()}
    value, down, up = at(mid), 0.0, 0.0
    for k, b in bands.items():
        for end in ("lo", "hi"):
            move = at({**mid, k: b[end]}) - value
            down, up = down + min(move, 0.0) ** 2, up + max(move, 0.0) ** 2
    return {"H": H, "value": value, "lo": value - math.sqrt(down), "hi": value + math.sqrt(up)}


def sign(b: dict) -> str:
    """"+" when the band is above 0, "-" when below, "?" when it contains 0 (or is missing)."""
    if b is None or not all(math.isfinite(b[k]) for k in ("lo", "hi")):
        return "?"
    return "+" if b["lo"] > 0 else "-" if b["hi"] < 0 else "?"


def predict(points: list[dict], c: dict, *, n: int, N: int, margin: float, kappa: float) -> dict:
    """The prediction over budgets. `points`: one {H, base_J, base_sigma, vf_J, vf_sigma} (bands)
    per budget, increasing H. Returns the gap per H, the sign at the largest H and the growth
    gap(H_max) - gap(H_min) with its sign."""
    gaps = [gap(p["H"], p["base_J"], p["base_sigma"], p["vf_J"], p["vf_sigma"], c, n=n, N=N, margin=margin,
                kappa=kappa) for p in points]
    last, first = gaps[-1], gaps[0]
    d = last["value"] - first["value"]  # its interval: the two gaps' half-widths in quadrature
    growth = {"value": d, "lo": d - math.hypot(last["value"] - last["lo"], first["hi"] - first["value"]),
              "hi": d + math.hypot(last["hi"] - last["value"], first["value"] - first["lo"])}
    return {"gaps": gaps, "sign": sign(last), "growth": growth if len(gaps) > 1 else None,
            "growth_sign": sign(growth) if len(gaps) > 1 else "?",
            "knobs": {"n": n, "N": N, "margin": margin, "kappa": kappa}}


def pooled(T: torch.Tensor, H: int, n_boot: int, seed: int) -> tuple[dict, dict]:
    """(mean return, pooled sd of R_H) of first-success indices T at budget H, as bands: 95%
    percentile bootstrap over the rows of T (prompts of an (N, M) matrix; traces of a (K, 1) one)."""
    R = returns(T.flatten(), H).view(T.shape).double()  # (U, K)
    idx = torch.randint(R.shape[0], (n_boot, R.shape[0]), generator=torch.Generator().manual_seed(seed))
    boot = R[idx].flatten(1)  # (B, U*K)
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    out = []
    for point, draws in ((R.mean(), boot.mean(1)), (R.std(), boot.std(1))):
        lo, hi = torch.quantile(draws, q).tolist()
        out.append(band_of(float(point), lo, hi))
    return out[0], out[1]


def from_traces(T_base: torch.Tensor, T_vf: torch.Tensor, c: dict, H: int, *, n: int, N: int, margin: float,
                kappa: float, n_boot: int, seed: int) -> dict:
    """The prediction from the base's (N, M) and the VF data's (K,) first-success indices sampled at
    budget H, read at H/8, H/4, H/2 and H by truncation (T > h fails at h)."""
    budgets = sorted({H >> k for k in range(4) if H >> k >= 1})
    points = []
    for h in budgets:
        (bj, bs), (vj, vs) = pooled(T_base, h, n_boot, seed), pooled(T_vf.view(-1, 1), h, n_boot, seed)
        points.append({"H": h, "base_J": bj, "base_sigma": bs, "vf_J": vj, "vf_sigma": vs})
    return {**predict(points, c, n=n, N=N, margin=margin, kappa=kappa), "points": points}


SIGN_WORDS = {"+": "VB ahead", "-": "VF ahead", "?": "uncertain"}
GROWTH_WORDS = {"+": "grows with H", "-": "shrinks with H", "?": "uncertain"}


def check(predicted: str, measured: str) -> str:
    """hit / miss / undecided: a prediction is judged only where both signs are decided."""
    if "?" in (predicted, measured):
        return "undecided"
    return "hit" if predicted == measured else "miss"
