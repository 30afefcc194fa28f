"""Search under a total token budget H: best-of-N selection rules, pass@k, verifier-guided early stop.

Best-of-N at budget H draws N samples of floor(H/N) tokens each and selects one:
  bon     the sample whose final prefix the verifier scores highest (VB);
  maj     majority vote over extracted answers (planted task: the last m content tokens of a
          sample; samples with fewer than m content tokens abstain);
  wmaj    verifier-weighted majority: each answer gets the sum of its samples' final scores;
  oracle  any correct sample if there is one (pass@N, the upper bound).
Ties go to the lowest sample index. A selected sample is correct when the task's checker finds
the target in it (T <= floor(H/N)): the same checker as every other method.

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
from veriscale.tasks.base import NEVER, Sampler
from veriscale.tasks.planted import PlantedTask

Selection = Literal["bon", "maj", "wmaj", "oracle", "early_stop"]
NEEDS_VERIFIER = ("bon", "wmaj", "early_stop")


@dataclass
class Pool:
    """N samples per problem, drawn once at the largest budget.

    prompts (B, k); tokens (B, N, L) with L = floor(H_max/N), padded after each sample's end;
    counts (B, N) generated tokens; T (B, N) first-success index of each full sample; scores
    (B, N, L) verifier score of every prefix (None without a verifier).
    """

    task: PlantedTask
    prompts: torch.Tensor
    tokens: torch.Tensor
    counts: torch.Tensor
    T: torch.Tensor
    scores: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return self.tokens.shape[1]

    def subset(self, idx: torch.Tensor) -> "Pool":
        """The pool restricted to samples `idx` (1-D) of every problem."""
        scores = None if self.scores is None else self.scores[:, idx]
        return Pool(self.task, self.prompts, self.tokens[:, idx], self.counts[:, idx], self.T[:, idx], scores)


def draw_pool(sampler: Sampler, task: PlantedTask, prompts: torch.Tensor, n: int, max_budget: int, *,
              temperature: float = 1.0, seed: int = 0, verifier=None) -> Pool:
    """Sample n traces of floor(max_budget/n) tokens for each of the (B, k) prompts; score every
    prefix with `verifier` (a `learn.verifier.Verifier`) when given."""
    L = max_budget // n
    if L < 1:
        raise ValueError(f"budget {max_budget} is smaller than the {n} samples it must be split into")
    rep = prompts.repeat_interleave(n, 0)
    ro = sampler.sample(rep, L, temperature=temperature, seed=seed)
    T = task.check(rep, ro)
    scores = verifier.score(rep, ro) if verifier is not None else None
    B = prompts.shape[0]
    return Pool(task, prompts, ro.tokens.view(B, n, L), ro.counts.view(B, n), T.view(B, n),
                None if scores is None else scores.view(B, n, L))


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


def extract_answers(task: PlantedTask, tokens: torch.Tensor, used: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last m content tokens of each sample: tokens (..., L), used (...) -> answers (..., m),
    valid (...) (False when the sample holds fewer than m content tokens)."""
    m, L = task.cfg.answer_len, tokens.shape[-1]
    content = (tokens < task.cfg.vocab) & (torch.arange(L) < used[..., None])  # content ids are 0..V-1
    from_end = content.flip(-1).cumsum(-1).flip(-1)  # 1 at the last content token, 2 before it, ...
    keep = content & (from_end <= m)
    slot = torch.where(keep, m - from_end, m)  # answer position; m is a discard column
    answers = torch.zeros(*tokens.shape[:-1], m + 1, dtype=tokens.dtype).scatter(-1, slot, tokens)
    return answers[..., :m], content.sum(-1) >= m


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
    L = H // pool.n
    used = pool.counts.clamp(max=L)  # (B, N) tokens each truncated sample generated
    correct = pool.T <= L
    final = None if pool.scores is None else pool.scores.gather(2, (used - 1)[..., None]).squeeze(-1)
    answers, valid = extract_answers(pool.task, pool.tokens[..., :L], used)
    j = select(rule, correct, final, answers, valid)
    ok = correct.gather(1, j[:, None]).squeeze(1)
    spent = used.sum(1)  # (B,) T_eff
    calls = torch.full_like(spent, pool.n if rule in NEEDS_VERIFIER else 0)
    return torch.where(ok, spent, NEVER), spent, calls


def _early_stop(pool: Pool, H: int, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    used = pool.counts[:, 0].clamp(max=H)  # (B,)
    h = torch.arange(1, H + 1)
    passed = (pool.scores[:, 0, :H] >= threshold) & (h[None] <= used[:, None])  # (B, H)
    stop = torch.where(passed.any(1), passed.int().argmax(1) + 1, used)  # (B,) h_stop
    T = pool.T[:, 0]
    return torch.where(T <= stop, T, NEVER), stop, stop


def search_budgets(pool: Pool, budgets: list[int], selection: Selection, *, threshold: float = 0.5) -> list[dict]:
    """Per budget H (each <= the pool's budget): `BudgetMetrics` fields + verifier_calls for one
    selection rule, every H served by truncating the same pool."""
    if selection in NEEDS_VERIFIER and pool.scores is None:
        raise ValueError(f"selection {selection!r} needs verifier scores in the pool")
    if selection == "early_stop" and pool.n != 1:
        raise ValueError(f"early_stop works on one sequential trace per problem, the pool has {pool.n}")
    out = []
    for H in sorted(budgets):
        if not 1 <= H // pool.n <= pool.tokens.shape[2]:
            raise ValueError(f"budget {H} needs {H // pool.n} tokens per sample; the pool has "
                             f"{pool.n} x {pool.tokens.shape[2]}")
        T, tokens, calls = _early_stop(pool, H, threshold) if selection == "early_stop" \
            else _best_of_n(pool, H, selection)
        out.append(budget_record(T, tokens, calls, H))
    return out
