"""Evaluate a policy at many budgets (SPEC §4), for any policy and task.

Every method is put on the same footing: the same held-out prompts, the same budgets, the same
accounting (`search.budget_record`: tokens charged, never more than H, and verifier calls).
Evaluation kinds:
  base | sft | rl   one sequential trace of the policy per problem (the name only labels which
                    policy it is), sampled once at H_max; each smaller budget H re-grades the trace
                    cut to H tokens (a cut text trace can end in a different final answer);
  expert            one trace of the planted task's expert process (what VF clones), likewise;
  bon | maj | wmaj | oracle   best-of-N samples of the policy under a best-of-N `accounting`
                    (search.py `SearchPlan`: shared H, or H per sample);
  early_stop        one trace of the policy, stopped by the verifier.
A sequential trace can instead be sampled once per budget with budget forcing (`forcing`, text
policies): the trace is capped at each H by forcing the answer cue (policy/forcing.py).

The work splits in two, so a study can store traces once and grade them in several ways:
`draw` samples traces, `grade_sequential` / `grade_search` turn traces into metrics rows.
`evaluate_method` chains them for one method. `diagnose_policy` gives a study its record of a
base policy's heterogeneity and anti-concentration (diagnose.py).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from veriscale.config import from_dict
from veriscale.diagnose import DiagnoseConfig, diagnose
from veriscale.policy.forcing import BudgetForcing
from veriscale.search import Accounting, Pool, SearchPlan, budget_record, repeat_each, search_budgets
from veriscale.tasks.base import Rollouts, Task
from veriscale.tasks.planted import ExpertSampler

SEQUENTIAL = ("base", "expert", "sft", "rl")
# The evaluation kinds: one sequential trace of a policy, or a search selection rule.
EVALUATIONS = SEQUENTIAL + ("bon", "maj", "wmaj", "oracle", "early_stop")


def draw(sampler, prompts: Any, per_prompt: int, width: int, *, temperature: float = 1.0, seed: int = 0,
         forcing: BudgetForcing | None = None) -> Rollouts:
    """`per_prompt` traces of at most `width` tokens per prompt (row b*per_prompt+j is trace j of
    prompt b), budget-forced at H = width when `forcing` is given."""
    rep = repeat_each(prompts, per_prompt)
    if forcing is not None:
        return sampler.sample(rep, width, temperature=temperature, seed=seed, forcing=forcing)
    return sampler.sample(rep, width, temperature=temperature, seed=seed)


def grade_sequential(task: Task, prompts: Any, per_prompt: int, traces: Callable[[int], Rollouts],
                     budgets: list[int]) -> list[dict]:
    """One record per budget H from `traces(H)`: the rollouts that answer budget H (one draw at
    H_max, or a forced draw per H), cut to H tokens and graded by the task's checker."""
    rep = repeat_each(prompts, per_prompt)
    rows = []
    for H in sorted(budgets):
        cut = traces(H).truncate(H)
        rows.append(budget_record(task.check(rep, cut), cut.counts, torch.zeros_like(cut.counts), H))
    return rows


def grade_search(plan: SearchPlan, task: Task, prompts: Any, rollouts: Rollouts, budgets: list[int], *,
                 verifier=None, scores: torch.Tensor | None = None, threshold: float = 0.5,
                 drawn: int | None = None) -> list[dict]:
    """One record per budget for `plan` over a pool of plan.samples samples per problem
    (`rollouts`: B*N rows of width L(H_max)), every budget read off by truncation. A plan that
    needs a verifier reads `scores` ((B*N, L), the verifier's score of every prefix, as
    `Verifier.score` returns them) or scores the pool with `verifier`. A pool of `drawn` >
    plan.samples samples per problem (B*drawn rows, and scores) serves the plan with the first
    plan.samples samples of each problem (best-of-N's N chosen per budget, study/search_choice.py)."""
    if drawn is not None and drawn != plan.samples:
        if drawn < plan.samples:
            raise ValueError(f"a pool of {drawn} samples per problem cannot serve {plan.samples}")
        rows = (torch.arange(len(rollouts) // drawn)[:, None] * drawn + torch.arange(plan.samples)).flatten()
        rollouts, scores = rollouts.take(rows), None if scores is None else scores[rows]
    if plan.needs_verifier:
        if scores is None and verifier is None:
            raise ValueError(f"method {plan.selection!r} needs a verifier")
        if scores is None:
            scores = verifier.score(repeat_each(prompts, plan.samples), rollouts)
        scores = scores.view(len(prompts), plan.samples, -1)
    else:
        scores = None
    return search_budgets(Pool(task, prompts, rollouts, plan, scores), budgets, threshold=threshold)


def evaluate_method(method: str, policy, task: Task, prompts: Any, budgets: list[int], *, verifier=None,
                    samples: int = 1, N: int = 4, temperature: float = 1.0, seed: int = 0,
                    threshold: float = 0.5, accounting: Accounting = "shared",
                    forcing: BudgetForcing | None = None) -> list[dict]:
    """One record per budget (`BudgetMetrics` fields, verifier_calls, method) for evaluation kind
    `method` with `policy` on held-out `prompts`, `samples` independent problems per prompt;
    search methods draw best-of-`N` pools under `accounting`."""
    if method not in EVALUATIONS:
        raise ValueError(f"method must be one of {list(EVALUATIONS)}, got {method!r}")
    budgets = sorted(budgets)
    if method in SEQUENTIAL:
        sampler = ExpertSampler(task) if method == "expert" else policy
        if forcing is not None:
            if method == "expert":
                raise ValueError("the expert is not budget-forced")
            forced = {H: draw(sampler, prompts, samples, H, temperature=temperature, seed=seed, forcing=forcing)
                      for H in budgets}
            rows = grade_sequential(task, prompts, samples, forced.__getitem__, budgets)
        else:
            ro = draw(sampler, prompts, samples, budgets[-1], temperature=temperature, seed=seed)
            rows = grade_sequential(task, prompts, samples, lambda H: ro, budgets)
    else:
        plan = SearchPlan(method, N, accounting)
        problems = repeat_each(prompts, samples)
        ro = draw(policy, problems, plan.samples, plan.sample_len(budgets[-1]), temperature=temperature, seed=seed)
        rows = grade_search(plan, task, problems, ro, budgets, verifier=verifier, threshold=threshold)
    return [{"method": method, **r} for r in rows]


def diagnose_policy(policy, task: Task, *, budget: int, prompts: int, samples: int, temperature: float = 1.0,
                    seed: int = 0) -> dict:
    """The diagnosis (diagnose.py) of a policy on its task's test prompts at `budget`, without
    its per-prompt lists or wall time (a study record is deterministic data)."""
    cfg = from_dict(DiagnoseConfig, {"budget": budget, "prompts": prompts, "samples": samples,
                                     "temperature": temperature, "seed": seed})
    out = diagnose(policy, task, cfg)
    return {k: v for k, v in out.items() if k not in ("per_prompt", "prompt_text", "policy", "sample_seconds")}
