"""First-success index T -> bi-level returns, J_H, success@H, with 95% confidence intervals.

Bi-level reward (SPEC §1): r_h = 1{h >= T}, so the return over a budget H is
    R_H = sum_{h=1..H} r_h = (H - T + 1) * 1{T <= H}.
J_H = mean R_H; curves show J_H / H in [0, 1] beside success@H = P(T <= H).

A trace sampled at the largest budget answers every smaller budget H' by truncation, charged
min(count, H') tokens. Where T is a property of the whole trace, as on the planted task (whose
checker credits the target wherever it appears), the truncated trace has the same T when T <= H'
and fails otherwise, so success@H of one draw cannot fall as H grows; `evaluate_budgets` reads
the budgets off that way from one T. A text trace is different: cut at H' it is graded anew
(`evaluate.grade_sequential`, `search.search_budgets`), and its final answer is the last one
complete by H', so a cut trace can end in a different final answer (right when cut before a
later wrong one, wrong after it), and one draw's success@H can fall as H grows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


def returns(T: torch.Tensor, H: int) -> torch.Tensor:
    """(B,) float bi-level return R_H = (H - T + 1) * 1{T <= H} for (B,) int64 T."""
    ok = T <= H
    return torch.where(ok, (H - T.clamp(max=H) + 1).double(), torch.zeros((), dtype=torch.float64))


def mean_ci(x: torch.Tensor, z: float = 1.96) -> tuple[float, float, float]:
    """Mean and normal-approximation 95% CI (mean +- z * sd / sqrt(n)) of a 1-D sample."""
    x = x.double().flatten()
    n = x.numel()
    if n == 0:
        return math.nan, math.nan, math.nan
    m = x.mean().item()
    half = z * x.std(unbiased=True).item() / math.sqrt(n) if n > 1 else 0.0
    return m, m - half, m + half


@dataclass
class BudgetMetrics:
    """Metrics of one method at one budget H; every field is a plain number for the results store."""

    budget: int
    n: int
    J: float  # mean return, tokens
    J_norm: float  # J / H
    J_norm_lo: float
    J_norm_hi: float
    success: float  # success@H
    success_lo: float
    success_hi: float
    tokens: float  # mean tokens charged per prompt
    T_mean: float  # mean first-success index over the successful traces (NaN without one)
    T_std: float  # sd of T over the successful traces (NaN below two): the length heterogeneity
    R_std: float  # sd of R_H over all traces (sigma of SPEC §1, pooled over prompts)

    def as_dict(self) -> dict:
        return asdict(self)


def budget_metrics(T: torch.Tensor, tokens: torch.Tensor, H: int) -> BudgetMetrics:
    """Metrics at budget H from (B,) T and (B,) tokens charged (already capped at H)."""
    R = returns(T, H)
    J, _, _ = mean_ci(R)
    Jn, Jlo, Jhi = mean_ci(R / H)
    ok = T <= H
    s, slo, shi = mean_ci(ok.double())
    Ts = T[ok].double()
    return BudgetMetrics(budget=H, n=int(T.numel()), J=J, J_norm=Jn, J_norm_lo=Jlo, J_norm_hi=Jhi,
                         success=s, success_lo=max(0.0, slo), success_hi=min(1.0, shi),
                         tokens=float(tokens.double().mean()),
                         T_mean=Ts.mean().item() if len(Ts) else math.nan,
                         T_std=Ts.std().item() if len(Ts) > 1 else math.nan,
                         R_std=R.std().item() if len(R) > 1 else math.nan)


def evaluate_budgets(T: torch.Tensor, counts: torch.Tensor, budgets: list[int]) -> list[BudgetMetrics]:
    """Metrics at each budget from one set of max-budget traces, by truncation.

    T: (B,) first-success index of the max-budget traces; counts: (B,) their generated tokens.
    """
    return [budget_metrics(T, counts.clamp(max=H), H) for H in budgets]
