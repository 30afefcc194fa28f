"""Search's best use of its budget: best-of-N's N chosen per budget on validation prompts.

Under the shared accounting the N samples of best-of-N split the budget H (H/N tokens each):
more samples give the selection more to choose from, each of them shorter. The study's N
(`samples_per_problem`) is one point of that trade-off, as VF's fixed forcing schedule is one
of its own (study/forcing_choice.py); the same rule applies to both. For each best-of-N method
and learner (n, seed):

  validation pool  N_max base samples of H_max tokens per problem on validation prompts
                   (study/jobs.py `held_out`: training-split prompts outside the verifier's n
                   training prompts, never the test set), scored by the method's verifier;
  SearchChoiceJob  grades that pool under the method's selection rule for every candidate N
                   (the divisors of N_max), each with the first N samples of every problem cut
                   to H/N tokens (`grade_search(drawn=N_max)`), and keeps per budget H the N of
                   highest validation success (ties: the study's N, then the larger N);
  the evaluation   grades budget H on the test pool of N_max samples of H_max tokens with the
                   first N(H) samples of every problem (EvalJob.choice), so it charges at most
                   H tokens a problem, as the fixed N does.

The fixed N is reported beside it (label `method:shared:fixed`). The per-sample accounting has
no such choice to make: there every sample gets H, so a larger N only draws more tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from safetensors.torch import load_file

from veriscale.atomic import write_json_atomic
from veriscale.evaluate import grade_search
from veriscale.search import SearchPlan, repeat_each
from veriscale.study.jobs import SCORES_FILE, SEARCH_CHOICES_FILE, DrawJob, Job, ScoresJob, held_out, read_draw
from veriscale.study.methods import METHODS
from veriscale.study.world import Dep, World


def widths(N: int) -> list[int]:
    """The N a best-of-N of N_max = N samples drawn may use: N's divisors, the study's N first,
    then the larger before the smaller (the tie-break order of `choose`)."""
    return [k for k in range(N, 0, -1) if N % k == 0]


def choose(success: dict[int, dict[int, float]], H: int) -> dict:
    """The N of budget H: the candidate (keys of `success`, N -> budget -> validation success,
    in `widths` order) of the highest validation success, the earliest on a tie."""
    order = list(success)
    N = max(order, key=lambda k: (success[k][H], -order.index(k)))
    return {"N": N, "val_success": success[N][H], "fixed_N": order[0], "fixed_val_success": success[order[0]][H]}


@dataclass(frozen=True)
class SearchChoiceJob(Job):
    """Per budget H, the N of best-of-N (`method`, shared accounting) of the best validation
    success on the validation pool `draw` (N samples of H_max tokens per problem) and its
    verifier `scores` (None for a rule without a verifier)."""

    kind: ClassVar[str] = "search_choice"
    method: str = ""
    N: int = 4
    budgets: tuple[int, ...] = ()
    draw: str = ""
    scores: str | None = None
    prompts: int = 0
    per_prompt: int = 1
    validation: tuple[int, int] = (0, 0)

    def fields(self) -> dict[str, Any]:
        return {"method": self.method, "N": self.N, "budgets": list(self.budgets), "draw": self.draw,
                "scores": self.scores, "prompts": self.prompts, "per_prompt": self.per_prompt,
                "validation": list(self.validation)}

    def inputs(self) -> tuple[str | None, ...]:
        return (self.draw, self.scores)

    def make(self, dep: Dep, out: Path) -> None:
        task, decoder = self.world.make_task(), self.world.base_policy(dep)
        problems = repeat_each(held_out(task, self.prompts, self.validation), self.per_prompt)
        pool = read_draw(dep(self.draw), decoder)
        scores = load_file(str(dep(self.scores) / SCORES_FILE))["scores"] if self.scores else None
        rule = METHODS[self.method].evaluation
        success = {}  # N -> budget -> validation success of best-of-N at that budget
        for N in widths(self.N):
            rows = grade_search(SearchPlan(rule, N, "shared"), task, problems, pool, list(self.budgets),
                                scores=scores, drawn=self.N)
            success[N] = {H: r["success"] for H, r in zip(sorted(self.budgets), rows)}
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / SEARCH_CHOICES_FILE, {
            "val_prompts": self.prompts,
            "candidates": [{"N": N, "val_success": {str(H): v for H, v in s.items()}} for N, s in success.items()],
            "chosen": {str(H): choose(success, H) for H in self.budgets}})


def search_choice(world: World, method: str, N: int, budgets: tuple[int, ...], verifier: str | None,
                  prompts: int, per_prompt: int, validation: tuple[int, int], temperature: float, seed: int,
                  sampler: str) -> list[Job]:
    """The jobs that choose one best-of-N method's N per budget, in dependency order (the
    validation pool, its verifier scores when the rule reads them, the choice): the last is the
    choice an EvalJob reads."""
    pool = DrawJob(world, None, prompts, per_prompt * N, max(budgets), None, temperature, seed, sampler,
                   validation=validation)
    scores = ScoresJob(world, prompts, verifier, pool.id, validation=validation) if verifier else None
    choice = SearchChoiceJob(world, method, N, tuple(sorted(budgets)), pool.id, scores.id if scores else None,
                             prompts, per_prompt, validation)
    return [j for j in (pool, scores, choice) if j is not None]
