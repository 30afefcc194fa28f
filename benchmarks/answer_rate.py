"""How often each policy's test draws give an answer at all, from a study's stored draws: per
policy kind (base, gold SFT, search-trace SFT, RL on the outcome, RL against the verifier) and
draw width, the share of traces in which the strict grader finds an answer (an answer cue or a
box, grading.py `answer_span`), and the share it credits. Strict grading gives no credit without
the cue, so a method that inherits the base's habit of leaving it out loses there, whatever its
arithmetic.

    python benchmarks/answer_rate.py runs/llm
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def policy_kind(study_dir: Path, policy: str | None) -> str:
    """What a draw's policy is, from its artifact's job.json."""
    if policy is None:
        return "base"
    meta = json.loads((study_dir / "artifacts" / policy / "job.json").read_text())
    cfg = meta["config"]["cfg"]
    if meta["kind"] == "sft":
        return "sft (gold)" if cfg["expert"] == "expert" else f"sft ({cfg['expert']} traces)"
    if meta["kind"] == "rl":
        return f"rl ({cfg['reward']})"
    return meta["kind"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study_dir", type=Path)
    a = ap.parse_args()

    from veriscale.grading import answer_span
    from veriscale.search import repeat_each
    from veriscale.study.execute import artifact_dir
    from veriscale.study.grid import expand
    from veriscale.study.jobs import DrawJob, held_out, read_draw
    from veriscale.study.store import DONE
    from veriscale.study.sweep import load_study

    dep = lambda i: artifact_dir(a.study_dir, i)  # noqa: E731
    draws = [j for j in expand(load_study(a.study_dir))
             if type(j) is DrawJob and j.validation is None and (dep(j.id) / DONE).is_file()]
    if not draws:
        raise SystemExit(f"{a.study_dir}: no finished test draws among its artifacts")
    world = draws[0].world
    world.quiet()
    task, decoder = world.make_task(), world.base_policy(dep)
    # (kind, width, forced) -> [traces, with an answer, credited, draws]
    cells: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for j in draws:
        ro = read_draw(dep(j.id), decoder)
        prompts = repeat_each(held_out(task, j.prompts, None), j.per_prompt)
        credited = (task.check(prompts, ro) <= j.width).sum().item()
        answered = sum(answer_span(t) is not None for t in ro.texts)
        c = cells[(policy_kind(a.study_dir, j.policy), j.width, j.forcing is not None)]
        c[0], c[1], c[2], c[3] = c[0] + len(ro), c[1] + answered, c[2] + credited, c[3] + 1
    print(f"{a.study_dir}: test draws, pooled over seeds\n")
    print("| policy | width | forced | draws | traces | with an answer | credited | credited among answered |")
    print("|---|---|---|---|---|---|---|---|")
    for (kind, width, forced), (n, ans, ok, k) in sorted(cells.items()):
        print(f"| {kind} | {width} | {'yes' if forced else 'no'} | {k} | {n} | {ans / n:.3f} | {ok / n:.3f} | "
              f"{ok / ans if ans else float('nan'):.3f} |")


if __name__ == "__main__":
    main()
