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

`SearchPlan` holds the width rule (samples per problem, tokens per sample, the cap charged) for
every caller: study jobs, evaluation and search. Sample once: a pool holds N traces of L(H_max)
tokens per problem (and the verifier's score of every prefix); `search_budgets` serves every
H <= H_max by truncating each sample to L(H), which has exactly the distribution of sampling
L(H) tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from veriscale.rewards import budget_metrics
from veriscale.tasks.base import NEVER, Rollouts, Task, repeat_each, take

Selection = Literal["bon", "maj", "wmaj", "oracle", "early_stop"]
Accounting = Literal["shared", "per_sample"]
NEEDS_VERIFIER = ("bon", "wmaj", "early_stop")


@dataclass(frozen=True)
class SearchPlan:
    """How a search method draws and charges at budget H: the one place of the width rule.

    selection: the rule that picks a sample; N: samples per problem of best-of-N (early_stop
    writes one trace, whatever N); accounting: how the samples share H (module docstring).
    """

    selection: Selection
    N: int = 4
    accounting: Accounting = "shared"

    @property
    def samples(self) -> int:
        """Samples drawn per problem."""
        return 1 if self.selection == "early_stop" else self.N

    @property
    def needs_verifier(self) -> bool:
        return self.selection in NEEDS_VERIFIER

    def sample_len(self, H: int) -> int:
        """Tokens each sample gets at budget H."""
        L = H // self.samples if self.accounting == "shared" else H
        if L < 1:
            raise ValueError(f"budget {H} is smaller than the {self.samples} samples it must be split into")
        return L

    def cap(self, H: int) -> int:
        """The most tokens a problem may be charged at budget H (N*H when each sample gets H)."""
        return H * self.samples if self.accounting == "per_sample" else H

    def pool_width(self, H: int, shared_pool: bool) -> int:
        """Tokens per sample of the pool drawn for budget H: this plan's sample length, or H when
        the pool also serves the per-sample accounting (truncating a sample of H tokens to its
        first L is a sample of L tokens)."""
        return H if shared_pool else self.sample_len(H)


@dataclass
class Pool:
    """The samples of every problem, drawn once at the largest budget under `plan`.

    prompts: the B problems ((B, k) tensor or list); rollouts: B*N rows (N = plan.samples) of
    width L(H_max); row b*N+j is sample j of problem b; scores (B, N, L) verifier score of
    every prefix (None without a verifier).
    """

    task: Task
    prompts: torch.Tensor | list
    rollouts: Rollouts
    plan: SearchPlan
    scores: torch.Tensor | None = None

    @property
    def N(self) -> int:
        """Samples per problem."""
        return self.plan.samples

    def __post_init__(self) -> None:
        if len(self.rollouts) != len(self.prompts) * self.N:
            raise ValueError(f"{len(self.rollouts)} rollouts for {len(self.prompts)} problems x {self.N} samples")

    @property
    def width(self) -> int:
        return self.rollouts.tokens.shape[1]


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
    than `cap` tokens (H unless given: N*H for per-sample best-of-N), and `T_per_problem`: each
    problem's (B,) first-success index within H, None where it failed, in problem order (problem
    b is held-out prompt b // samples-per-prompt, the same prompts for every method and seed),
    so intervals can resample prompts and gaps can be paired by prompt."""
    cap = H if cap is None else cap
    if (tokens > cap).any():
        raise AssertionError(f"accounting: a row charged {int(tokens.max())} tokens at budget H={H} (cap {cap})")
    return {**budget_metrics(T, tokens, H).as_dict(), "verifier_calls": float(calls.double().mean()),
            "T_per_problem": [t if t <= H else None for t in T.tolist()]}


def _best_of_n(pool: Pool, H: int, rule: Selection) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, N, L = len(pool.prompts), pool.N, pool.plan.sample_len(H)
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
    if pool.plan.accounting == "per_sample":
        return torch.where(ok, T.gather(1, j[:, None]).squeeze(1), NEVER), spent, calls
    return torch.where(ok, spent, NEVER), spent, calls  # shared: T_eff = every drawn token


def _early_stop(pool: Pool, H: int, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each trace stopped at the first prefix the verifier passes (else at its end within H), and
    graded as the prefix it stopped at: a later answer that overrides a correct one is not read."""
    used = pool.rollouts.counts.clamp(max=H)  # (B,): one trace per problem
    h = torch.arange(1, H + 1)
    passed = (pool.scores[:, 0, :H] >= threshold) & (h[None] <= used[:, None])  # (B, H)
    stop = torch.where(passed.any(1), passed.int().argmax(1) + 1, used)  # (B,) h_stop
    T = torch.full_like(stop, NEVER)
    for s in stop.unique().tolist():  # one check per stopping point, on the rows that stopped there
        rows = (stop == s).nonzero().squeeze(1)
        T_s = pool.task.check(take(pool.prompts, rows), pool.rollouts.take(rows).truncate(s))
        T[rows] = torch.where(T_s <= s, T_s, NEVER)
    return T, stop, stop


def search_budgets(pool: Pool, budgets: list[int], *, threshold: float = 0.5) -> list[dict]:
    """Per budget H (each <= the pool's budget): `BudgetMetrics` fields + verifier_calls for the
    pool's selection rule, every H served by truncating the same pool."""
    selection = pool.plan.selection
    if pool.plan.needs_verifier and pool.scores is None:
        raise ValueError(f"selection {selection!r} needs verifier scores in the pool")
    out = []
    for H in sorted(budgets):
        if pool.plan.sample_len(H) > pool.width:
            raise ValueError(f"budget {H} needs {pool.plan.sample_len(H)} tokens per sample; the pool has "
                             f"{pool.N} x {pool.width}")
        T, tokens, calls = _early_stop(pool, H, threshold) if selection == "early_stop" \
            else _best_of_n(pool, H, selection)
        out.append(budget_record(T, tokens, calls, H, pool.plan.cap(H)))
    return out
