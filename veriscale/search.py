"""Search under a total token budget H: best-of-N selection rules, pass@k, verifier-guided early stop.

Best-of-N at budget H draws N samples and selects one:
  bon     the sample whose final prefix the verifier scores highest (VB);
  maj     majority vote over the answers the samples count for (`Task.answer_keys`); a sample
          that commits to no answer abstains;
  wmaj    verifier-weighted majority: each answer gets the sum of its samples' final scores;
  oracle  any correct sample if there is one (pass@N, the upper bound).
Answers are the sample's own, read without the checker (only oracle consults it): planted task,
its last complete candidate; text tasks, the final answer span the grader extracts from the
sample's text, compared by exact value for numbers ("7" and "7.0" vote together) and by stripped
text otherwise.
Ties go to the lowest sample index. A selected sample is correct when the task's checker, run on
the sample as truncated to its per-sample length, finds the answer within it: the same checker
as every other method.

Accounting of best-of-N against the budget H (SPEC §1 leaves it open; both are study knobs):
  shared      the N samples share H: each gets L = floor(H/N) tokens, and the return charges all
              tokens drawn, T_eff = sum of the N samples' lengths (<= H):
              R_H = (H - T_eff + 1) * 1{selected sample correct};
  per_sample  each sample gets L = H tokens; the selected sample is scored as a sequential trace,
              R_H = (H - T_sel + 1) * 1{T_sel <= H}, and the N samples' drawn tokens (<= N*H) are
              what the tokens axis shows.
  success@H = P(the selected sample is correct) under both.
early_stop writes one sequential trace and stops at the first prefix h whose verifier score
reaches `threshold` (else at the trace's end or H) and answers with that prefix:
R_H = (H - T + 1) * 1{T <= h_stop}; tokens charged h_stop.
Verifier calls count scored prefixes: N per problem for bon/wmaj (one final prefix per sample),
one per generated token for early_stop (the score is checked after every token), 0 otherwise.
`budget_record` checks every row against its cap (H; N*H for per_sample).

Sample once: `draw_pool` samples N traces of L(H_max) tokens per problem (and scores all their
prefixes in one verifier pass); `search_budgets` serves every H <= H_max by truncating each
sample to L(H), which has exactly the distribution of sampling L(H) tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from veriscale.rewards import budget_metrics
from veriscale.tasks.base import NEVER, Rollouts, Sampler, Task, repeat_each

Selection = Literal["bon", "maj", "wmaj", "oracle", "early_stop"]
Accounting = Literal["shared", "per_sample"]
NEEDS_VERIFIER = ("bon", "wmaj", "early_stop")


@dataclass
class Pool:
    """N samples per problem, drawn once at the largest budget.

    prompts: the B problems ((B, k) tensor or list); rollouts: B*N rows of width
    L(H_max) (floor(H_max/N) shared, H_max per_sample), row b*N+j is sample j of problem b;
    scores (B, N, L) verifier score of every prefix (None without a verifier).
    """

    task: Task
    prompts: torch.Tensor | list
    rollouts: Rollouts
    n: int
    scores: torch.Tensor | None = None
    accounting: Accounting = "shared"

    def sample_len(self, H: int) -> int:
        """Tokens each sample gets at budget H."""
        return H // self.n if self.accounting == "shared" else H

    def __post_init__(self) -> None:
        if len(self.rollouts) != len(self.prompts) * self.n:
            raise ValueError(f"{len(self.rollouts)} rollouts for {len(self.prompts)} problems x {self.n} samples")

    @property
    def width(self) -> int:
        return self.rollouts.tokens.shape[1]

    def subset(self, idx: torch.Tensor) -> "Pool":
        """The pool restricted to samples `idx` (1-D) of every problem."""
        rows = (torch.arange(len(self.prompts))[:, None] * self.n + idx[None]).flatten()  # (B * len(idx),)
        scores = None if self.scores is None else self.scores[:, idx]
        return Pool(self.task, self.prompts, self.rollouts.take(rows), len(idx), scores, self.accounting)


def draw_pool(sampler: Sampler, task: Task, prompts: torch.Tensor | list, n: int, max_budget: int, *,
              temperature: float = 1.0, seed: int = 0, verifier=None, accounting: Accounting = "shared") -> Pool:
    """Sample n traces of L(max_budget) tokens for each of the B prompts; score every prefix
    with `verifier` (a `learn.verifier.Verifier`: (B*n, L) scores) when given."""
    L = max_budget // n if accounting == "shared" else max_budget
    if L < 1:
        raise ValueError(f"budget {max_budget} is smaller than the {n} samples it must be split into")
    rep = repeat_each(prompts, n)
    ro = sampler.sample(rep, L, temperature=temperature, seed=seed)
    scores = None if verifier is None else verifier.score(rep, ro).view(len(prompts), n, -1)
    return Pool(task, prompts, ro, n, scores, accounting)


def pass_at_k(n: torch.Tensor | int, c: torch.Tensor, k: int) -> torch.Tensor:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k), per problem, from c correct of n samples.

    Computed as 1 - prod_{i = n-c+1..n} (1 - k/i), which avoids huge binomials."""
    n = torch.as_tensor(n).expand_as(c).double()
    if k > n.min():
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {int(n.min())}")
    c = c.double()
    i = torch.arange(1, int(n.max()) + 1, dtype=torch.float64)  # (n_max,)
    factors = torch.where((i[None] > (n - c)[:, None]) & (i[None] <= n[:, None]), 1 - k / i[None], 1.0)
    return torch.where(n - c < k, torch.ones_like(c), 1 - factors.prod(1))


def select(rule: Selection, correct: torch.Tensor, scores: torch.Tensor | None, answers: torch.Tensor,
           valid: torch.Tensor) -> torch.Tensor:
    """(B,) index of the selected sample. correct/scores/valid (B, N), answers (B, N, m)."""
    if rule == "oracle":
        return correct.int().argmax(1)
    if rule == "bon":
        return scores.argmax(1)
    # Vote matrix same[b, j, l]: samples j and l give the same (valid) answer.
    same = (answers[:, :, None] == answers[:, None]).all(-1) & valid[:, :, None] & valid[:, None]
    weight = torch.ones_like(correct, dtype=torch.float) if rule == "maj" else scores
    votes = (same.float() * weight[:, None, :]).sum(-1)  # (B, N) support of sample j's answer
    return torch.where(valid, votes, -1.0).argmax(1)


def budget_record(T: torch.Tensor, tokens: torch.Tensor, calls: torch.Tensor, H: int, cap: int | None = None) -> dict:
    """`rewards.BudgetMetrics` fields plus mean verifier calls, after checking no row spent more
    than `cap` tokens (H unless given: N*H for per-sample best-of-N)."""
    cap = H if cap is None else cap
    if (tokens > cap).any():
        raise AssertionError(f"accounting: a row charged {int(tokens.max())} tokens at budget H={H} (cap {cap})")
    return {**budget_metrics(T, tokens, H).as_dict(), "verifier_calls": float(calls.double().mean())}


def _best_of_n(pool: Pool, H: int, rule: Selection) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, N, L = len(pool.prompts), pool.n, pool.sample_len(H)
    rep = repeat_each(pool.prompts, N)
    ro = pool.rollouts.truncate(L)  # B*N rows, as if sampled with L tokens each
    T = pool.task.check(rep, ro).view(B, N)
    correct = T <= L
    answers, valid = pool.task.answer_keys(rep, ro)  # (B*N, m), (B*N,)
    used = ro.counts.view(B, N)  # tokens each truncated sample generated
    final = None if pool.scores is None else pool.scores.gather(2, (used - 1)[..., None]).squeeze(-1)
    j = select(rule, correct, final, answers.view(B, N, -1), valid.view(B, N))
    ok = correct.gather(1, j[:, None]).squeeze(1)
    spent = used.sum(1)  # (B,) tokens drawn by all N samples
    calls = torch.full_like(spent, N if rule in NEEDS_VERIFIER else 0)
    if pool.accounting == "per_sample":
        return torch.where(ok, T.gather(1, j[:, None]).squeeze(1), NEVER), spent, calls
    return torch.where(ok, spent, NEVER), spent, calls  # shared: T_eff = every drawn token


def _early_stop(pool: Pool, T: torch.Tensor, H: int,
                threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """T (B,): first-success index of each problem's full (untruncated) trace."""
    used = pool.rollouts.counts.clamp(max=H)  # (B,): one trace per problem
    h = torch.arange(1, H + 1)
    passed = (pool.scores[:, 0, :H] >= threshold) & (h[None] <= used[:, None])  # (B, H)
    stop = torch.where(passed.any(1), passed.int().argmax(1) + 1, used)  # (B,) h_stop
    return torch.where(T <= stop, T, NEVER), stop, stop


def search_budgets(pool: Pool, budgets: list[int], selection: Selection, *, threshold: float = 0.5) -> list[dict]:
    """Per budget H (each <= the pool's budget): `BudgetMetrics` fields + verifier_calls for one
    selection rule, every H served by truncating the same pool."""
    if selection in NEEDS_VERIFIER and pool.scores is None:
        raise ValueError(f"selection {selection!r} needs verifier scores in the pool")
    if selection == "early_stop" and pool.n != 1:
        raise ValueError(f"early_stop works on one sequential trace per problem, the pool has {pool.n}")
    T_full = pool.task.check(pool.prompts, pool.rollouts) if selection == "early_stop" else None
    out = []
    for H in sorted(budgets):
        if not 1 <= pool.sample_len(H) <= pool.width:
            raise ValueError(f"budget {H} needs {pool.sample_len(H)} tokens per sample; the pool has "
                             f"{pool.n} x {pool.width}")
        T, tokens, calls = _early_stop(pool, T_full, H, threshold) if selection == "early_stop" \
            else _best_of_n(pool, H, selection)
        cap = H * pool.n if pool.accounting == "per_sample" and selection != "early_stop" else H
        out.append(budget_record(T, tokens, calls, H, cap))
    return out
