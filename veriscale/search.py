"""Search under a total token budget H: best-of-N selection rules, pass@k, verifier-guided early stop.

Best-of-N at budget H draws N samples of floor(H/N) tokens each and selects one:
  bon     the sample whose final prefix the verifier scores highest (VB);
  maj     majority vote over the answers the samples commit to (`Task.answer_keys`); a sample
          that commits to no answer abstains;
  wmaj    verifier-weighted majority: each answer gets the sum of its samples' final scores;
  oracle  any correct sample if there is one (pass@N, the upper bound).
Answers: planted task, the last m content tokens of a sample (fewer than m: no answer); text
tasks, the final answer span `grading.answer_span` finds in the sample's text, compared by exact
value for numbers ("7" and "7.0" vote together) and by stripped text otherwise.
Ties go to the lowest sample index. A selected sample is correct when the task's checker, run on
the sample as truncated to floor(H/N) tokens, finds the answer within it: the same checker as
every other method. (A cut text trace can lose or change its final answer; for the planted task
this is T <= floor(H/N) of the full sample.)

early_stop writes one sequential trace and stops at the first prefix h whose verifier score
reaches `threshold` (else at the trace's end or H) and answers with that prefix.

Accounting (SPEC §1 leaves the return of a search method open; this is our choice):
  best-of-N   T_eff = tokens the N samples generated (each stops at EOS or floor(H/N));
              R_H = (H - T_eff + 1) * 1{selected sample correct};  success@H = P(correct).
  early_stop  a sequential trace: R_H = (H - T + 1) * 1{T <= h_stop}; tokens charged h_stop.
Verifier calls count scored prefixes: N per problem for bon/wmaj (one final prefix per sample),
one per generated token for early_stop (the score is checked after every token), 0 otherwise.
No method may charge more than H tokens; `budget_record` checks it for every row.

Sample once: `draw_pool` samples N traces of floor(H_max/N) tokens per problem (and scores all
their prefixes in one verifier pass); `search_budgets` serves every H <= H_max by truncating
each sample to floor(H/N), which has exactly the distribution of sampling floor(H/N) tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from veriscale.rewards import budget_metrics
from veriscale.tasks.base import NEVER, Rollouts, Sampler, Task

Selection = Literal["bon", "maj", "wmaj", "oracle", "early_stop"]
NEEDS_VERIFIER = ("bon", "wmaj", "early_stop")


def repeat_each(prompts: torch.Tensor | list, n: int) -> torch.Tensor | list:
    """Each of the B prompts n times in a row (B*n of them: row b*n+j is copy j of prompt b);
    prompts are a (B, k) tensor or a list."""
    if isinstance(prompts, torch.Tensor):
        return prompts.repeat_interleave(n, 0)
    return [p for p in prompts for _ in range(n)]


@dataclass
class Pool:
    """N samples per problem, drawn once at the largest budget.

    prompts: the B problems ((B, k) tensor or list); rollouts: B*N rows of width
    L = floor(H_max/N), row b*N+j is sample j of problem b; scores (B, N, L) verifier score of
    every prefix (None without a verifier).
    """

    task: Task
    prompts: torch.Tensor | list
    rollouts: Rollouts
    n: int
    scores: torch.Tensor | None = None

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
        return Pool(self.task, self.prompts, self.rollouts.take(rows), len(idx), scores)


def draw_pool(sampler: Sampler, task: Task, prompts: torch.Tensor | list, n: int, max_budget: int, *,
              temperature: float = 1.0, seed: int = 0, verifier=None) -> Pool:
    """Sample n traces of floor(max_budget/n) tokens for each of the B prompts; score every
    prefix with `verifier` (a `learn.verifier.Verifier`: (B*n, L) scores) when given."""
    L = max_budget // n
    if L < 1:
        raise ValueError(f"budget {max_budget} is smaller than the {n} samples it must be split into")
    rep = repeat_each(prompts, n)
    ro = sampler.sample(rep, L, temperature=temperature, seed=seed)
    scores = None if verifier is None else verifier.score(rep, ro).view(len(prompts), n, -1)
    return Pool(task, prompts, ro, n, scores)


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


def budget_record(T: torch.Tensor, tokens: torch.Tensor, calls: torch.Tensor, H: int) -> dict:
    """`rewards.BudgetMetrics` fields plus mean verifier calls, after checking no row spent > H."""
    if (tokens > H).any():
        raise AssertionError(f"accounting: a row charged {int(tokens.max())} tokens at budget H={H}")
    return {**budget_metrics(T, tokens, H).as_dict(), "verifier_calls": float(calls.double().mean())}


def _best_of_n(pool: Pool, H: int, rule: Selection) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, N, L = len(pool.prompts), pool.n, H // pool.n
    rep = repeat_each(pool.prompts, N)
    ro = pool.rollouts.truncate(L)  # B*N rows, as if sampled with L tokens each
    correct = (pool.task.check(rep, ro) <= L).view(B, N)
    answers, valid = pool.task.answer_keys(rep, ro)  # (B*N, m), (B*N,)
    used = ro.counts.view(B, N)  # tokens each truncated sample generated
    final = None if pool.scores is None else pool.scores.gather(2, (used - 1)[..., None]).squeeze(-1)
    j = select(rule, correct, final, answers.view(B, N, -1), valid.view(B, N))
    ok = correct.gather(1, j[:, None]).squeeze(1)
    spent = used.sum(1)  # (B,) T_eff
    calls = torch.full_like(spent, N if rule in NEEDS_VERIFIER else 0)
    return torch.where(ok, spent, NEVER), spent, calls


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
        if not 1 <= H // pool.n <= pool.width:
            raise ValueError(f"budget {H} needs {H // pool.n} tokens per sample; the pool has "
                             f"{pool.n} x {pool.width}")
        T, tokens, calls = _early_stop(pool, T_full, H, threshold) if selection == "early_stop" \
            else _best_of_n(pool, H, selection)
        out.append(budget_record(T, tokens, calls, H))
    return out
