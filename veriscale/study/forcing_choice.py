"""VF's best use of its budget: a forced method's forcing chosen per budget on validation prompts.

A budget-forced policy (policy/forcing.py) given budget H may do better with a shorter target
(cap at H' <= H) or without s1's "Wait" extension than with the fixed schedule (cap at H,
extension before extend_share x H). For each learner (n, seed) the grid draws every candidate
(H', share) once on validation prompts (study/jobs.py `held_out`: training-split prompts outside
the learner's n, never the test set):

  ForcingChoiceJob  grades those validation draws and, per budget H, keeps the candidate with
                    the highest validation success among those with H' <= H (ties: the fixed
                    schedule first, then the longer target, then extension on);
  ChosenDrawJob     the test draw of that choice at budget H, `width` H' <= H tokens (reusing
                    the fixed-schedule draw when the choice is the fixed schedule, or any
                    finished test draw of the same candidate), with the choice beside it.

The chosen draw spends at most H tokens a trace, so the method stays at budget H; the fixed
schedule is reported beside it (label `method:fixed`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from veriscale.atomic import write_json_atomic
from veriscale.search import repeat_each
from veriscale.study.jobs import CHOICE_FILE, CHOICES_FILE, DRAW_FILE, DrawJob, Job, held_out, read_draw
from veriscale.study.store import DONE
from veriscale.study.world import Dep


def candidates(budgets: list[int], H: int, shares: list[float]) -> list[tuple[int, float]]:
    """The forcing settings open at budget H: every target H' <= H among the budgets, with each
    extension share, in tie-break order (H first, the shares as given: the fixed one first)."""
    return [(h, s) for h in sorted((b for b in budgets if b <= H), reverse=True) for s in shares]


def choose(success: dict[tuple[int, float], float], budgets: list[int], H: int, shares: list[float]) -> dict:
    """The forcing of budget H: the candidate (`candidates`) of the highest validation success,
    the earliest on a tie, so the fixed schedule (H, shares[0]) stays unless another beats it."""
    open_ = candidates(budgets, H, shares)
    target, share = max(open_, key=lambda c: (success[c], -open_.index(c)))
    return {"target": target, "extend_share": share, "val_success": success[(target, share)],
            "fixed_val_success": success[open_[0]]}


@dataclass(frozen=True)
class ForcingChoiceJob(Job):
    """Per budget H, the forcing (target H', extension share) of the best validation success.
    `draws`: (target, share, validation draw id) of every candidate of the largest budget."""

    kind: ClassVar[str] = "forcing_choice"
    budgets: tuple[int, ...] = ()
    draws: tuple[tuple[int, float, str], ...] = ()
    prompts: int = 0
    per_prompt: int = 1
    validation: tuple[int, int] = (0, 0)

    def fields(self) -> dict[str, Any]:
        return {"budgets": list(self.budgets), "draws": [list(d) for d in self.draws], "prompts": self.prompts,
                "per_prompt": self.per_prompt, "validation": list(self.validation)}

    def inputs(self) -> tuple[str | None, ...]:
        return tuple(d for _, _, d in self.draws)

    def make(self, dep: Dep, out: Path) -> None:
        task, decoder = self.world.make_task(), self.world.base_policy(dep)
        rep = repeat_each(held_out(task, self.prompts, self.validation), self.per_prompt)
        success = {}  # (target, share) -> validation success of that draw at its own width
        for target, share, d in self.draws:
            T = task.check(rep, read_draw(dep(d), decoder))
            success[(target, share)] = float((T <= target).double().mean())
        shares = list(dict.fromkeys(s for _, s, _ in self.draws))
        chosen = {str(H): choose(success, list(self.budgets), H, shares) for H in self.budgets}
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / CHOICES_FILE, {"val_prompts": self.prompts,
                                               "candidates": [{"target": t, "extend_share": s, "val_success": v}
                                                              for (t, s), v in success.items()],
                                               "chosen": chosen})


@dataclass(frozen=True)
class ChosenDrawJob(DrawJob):
    """The test draw at budget `width` = H of the forcing `choice` picked for H; `forcing` is
    the study's forcing before its extension is set; `fixed` the fixed-schedule test draw."""

    kind: ClassVar[str] = "chosen_draw"
    choice: str = ""
    fixed: str = ""

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "choice": self.choice, "fixed": self.fixed}

    def inputs(self) -> tuple[str | None, ...]:
        return (self.policy, self.choice, self.fixed)

    def make(self, dep: Dep, out: Path) -> None:
        picked = json.loads((dep(self.choice) / CHOICES_FILE).read_text())["chosen"][str(self.width)]
        target, share = picked["target"], picked["extend_share"]
        job = DrawJob(self.world, self.policy, self.prompts, self.per_prompt, target, self.forcing.at(target, share),
                      self.temperature, self.seed, self.sampler)
        # the same draw made elsewhere in the study has the same content: the fixed schedule at H
        # (a dependency), or the fixed schedule of a smaller budget; copy it when it is finished
        if (dep(job.id) / DONE).is_file():
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dep(job.id) / DRAW_FILE, out / DRAW_FILE)
        else:
            job.make(dep, out)
        write_json_atomic(out / CHOICE_FILE, {**picked, "draw": job.id})


def chosen_draws(fixed: dict[int, DrawJob], prompts: int, validation: tuple[int, int],
                 shares: list[float]) -> tuple[list[Job], dict[int, ChosenDrawJob]]:
    """The validation draws, choice and chosen test draws of one forced learner, from its
    fixed-schedule test draws (budget -> DrawJob, the extension share `shares[0]`): the jobs to
    run (validation draws, then the choice) and budget -> chosen draw."""
    budgets = sorted(fixed)
    top = fixed[budgets[-1]]
    base = replace(top.forcing, min_tokens=0)
    val = [(t, s, replace(top, prompts=prompts, width=t, forcing=base.at(t, s), validation=validation))
           for t, s in candidates(budgets, budgets[-1], shares)]
    choice = ForcingChoiceJob(top.world, tuple(budgets), tuple((t, s, j.id) for t, s, j in val), prompts,
                              top.per_prompt, validation)
    chosen = {H: ChosenDrawJob(top.world, top.policy, top.prompts, top.per_prompt, H, base, top.temperature,
                               top.seed, top.sampler, choice=choice.id, fixed=fixed[H].id) for H in budgets}
    return [j for _, _, j in val] + [choice], chosen
