"""Evaluate a policy at many budgets from one sampling pass at the largest budget (SPEC §4).

Each held-out prompt gets `samples` traces of max(budgets) tokens; every smaller budget is read
off by truncation (`rewards.evaluate_budgets`). The metrics are over prompts x samples.

`evaluate_method` puts every method on the same footing: the same held-out prompts, the same
budgets, the same accounting (`search.budget_record`: tokens charged, never more than H, and
verifier calls), one sampling pass at the largest budget per method.
  base | sft | rl   one sequential trace of the policy per problem (the method name only labels
                    which policy it is);
  expert            one trace of the task's expert process (what VF clones), drawn at H_max and
                    truncated like any policy's;
  bon | maj | wmaj | oracle   best-of-`n_search` samples of the policy under a best-of-N
                    `accounting` (search.py: shared H, or H per sample);
  early_stop        one trace of the policy, stopped by the verifier.
`diagnose_policy` gives the study its record of a base policy's heterogeneity and
anti-concentration (diagnose.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from veriscale.learn.verifier import load_verifier
from veriscale.policy.sampler import ExpertSampler, GPTSampler, load_gpt_policy
from veriscale.rewards import BudgetMetrics, evaluate_budgets
from veriscale.search import NEEDS_VERIFIER, Accounting, budget_record, draw_pool, search_budgets
from veriscale.tasks.base import Sampler, Task

SEQUENTIAL = ("base", "expert", "sft", "rl")
SEARCH = ("bon", "maj", "wmaj", "oracle", "early_stop")
METHODS = SEQUENTIAL + SEARCH


def sample_and_check(sampler: Sampler, task: Task, prompts: torch.Tensor, budget: int, *, samples: int = 1,
                     temperature: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, counts), each (N * samples,), for `samples` traces per prompt at `budget` tokens."""
    rep = prompts.repeat_interleave(samples, 0)
    rollouts = sampler.sample(rep, budget, temperature=temperature, seed=seed)
    return task.check(rep, rollouts), rollouts.counts


def evaluate_policy(sampler: Sampler, task: Task, prompts: torch.Tensor, budgets: list[int], *, samples: int = 1,
                    temperature: float = 1.0, seed: int = 0) -> list[BudgetMetrics]:
    """J_H/H, success@H and tokens at every budget from one pass at max(budgets)."""
    T, counts = sample_and_check(sampler, task, prompts, max(budgets), samples=samples,
                                 temperature=temperature, seed=seed)
    return evaluate_budgets(T, counts, sorted(budgets))


def evaluate_method(method: str, *, policy_dir: str | Path, verifier_dir: str | Path | None = None,
                    prompts: int | torch.Tensor = 256, budgets: list[int], samples: int = 1, n_search: int = 4,
                    temperature: float = 1.0, seed: int = 0, threshold: float = 0.5,
                    accounting: Accounting = "shared") -> list[dict]:
    """One record per budget (`BudgetMetrics` fields, verifier_calls, method) for `method` run
    with the policy of `policy_dir` on held-out prompts (a count drawn with `seed`, or a (B, k)
    tensor), `samples` independent problems per prompt, sampled once at max(budgets)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    model, task, _ = load_gpt_policy(policy_dir)
    budgets = sorted(budgets)
    if budgets[-1] > task.cfg.horizon:
        raise ValueError(f"budget {budgets[-1]} exceeds the policy's horizon {task.cfg.horizon}")
    test = task.prompts("test", prompts, seed) if isinstance(prompts, int) else prompts
    sampler = ExpertSampler(task) if method == "expert" else GPTSampler(model, task)
    if method in SEQUENTIAL:
        T, counts = sample_and_check(sampler, task, test, budgets[-1], samples=samples,
                                     temperature=temperature, seed=seed)
        rows = [budget_record(T, counts.clamp(max=H), torch.zeros_like(counts), H) for H in budgets]
    else:
        verifier = None
        if method in NEEDS_VERIFIER:
            if verifier_dir is None:
                raise ValueError(f"method {method!r} needs a verifier run directory")
            verifier = load_verifier(verifier_dir, task)
        n = 1 if method == "early_stop" else n_search
        pool = draw_pool(sampler, task, test.repeat_interleave(samples, 0), n, budgets[-1],
                         temperature=temperature, seed=seed, verifier=verifier, accounting=accounting)
        rows = search_budgets(pool, budgets, method, threshold=threshold)
    return [{"method": method, **r} for r in rows]


def diagnose_policy(policy_dir: str | Path, *, budget: int, prompts: int, samples: int, temperature: float = 1.0,
                    seed: int = 0) -> dict:
    """The diagnosis (diagnose.py) of a tiny-GPT policy on its own task's test prompts at `budget`,
    without its per-prompt lists (a study record keeps the summary)."""
    # imported here: diagnose.py loads transformers (for text policies), which no other job needs
    from veriscale.config import from_dict
    from veriscale.diagnose import DiagnoseConfig, diagnose

    cfg = from_dict(DiagnoseConfig, {"policy": str(policy_dir), "budget": budget, "prompts": prompts,
                                     "samples": samples, "temperature": temperature, "seed": seed,
                                     "group_size": min(8, samples)})
    model, task, _ = load_gpt_policy(policy_dir)
    out = diagnose(GPTSampler(model, task), task, cfg)
    # per-prompt lists stay out of the record, and so does wall time (records are deterministic data)
    return {k: v for k, v in out.items() if k not in ("per_prompt", "prompt_text", "policy", "sample_seconds")}
