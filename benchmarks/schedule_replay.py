"""Replay a finished study's jobs, each with the wall time it took, under the sweep's two
schedules: first come first served (every ready job handed to the pool at once, which runs them
in that order: the sweep before the level rule) and the level rule of
`veriscale.study.sweep._schedule` (a free worker takes the ready job with the longest chain of
dependents). Prints each one's simulated wall time next to the study's measured span (first
job's start to last job's end, from the files' modification times), which checks the replay.

Job times are `wall_s` in each artifact's job.json and each record. A replay keeps every job's
time as measured, so it ignores that two jobs at once slow each other more or less depending on
which two they are. `--scale KIND=F` multiplies the time of every job of that kind by F before
the replay (several allowed): a projection of a change measured on a job of that kind (a faster
sampler on the draws), not a measurement of the grid.

    python benchmarks/schedule_replay.py runs/llm --workers 2
    python benchmarks/schedule_replay.py results/llm-fair --workers 2 --scale draw=0.8 --scale chosen_draw=0.8
"""

from __future__ import annotations

import argparse
import heapq
import json
from pathlib import Path

from veriscale.study.grid import expand
from veriscale.study.jobs import Job
from veriscale.study.sweep import levels, load_study


def measured(study_dir: Path) -> tuple[dict[str, float], float]:
    """Each finished job's wall seconds, and the span from the first start to the last end."""
    wall, start, end = {}, [], []
    for f in [*study_dir.glob("artifacts/*/job.json"), *study_dir.glob("records/*.json")]:
        j = json.loads(f.read_text())
        wall[j["id"]] = j["wall_s"]
        end.append(f.stat().st_mtime)
        start.append(end[-1] - j["wall_s"])
    return wall, max(end) - min(start)


def replay(jobs: list[Job], wall: dict[str, float], workers: int, by_level: bool) -> float:
    """Simulated wall seconds of `jobs` on `workers` under one of the two schedules."""
    level = levels(jobs)
    waiting = {j.id: {d for d in j.deps if d in wall} for j in jobs}
    pending, queue = list(jobs), []  # queue: ready, not started, in the order they became ready
    running: list[tuple[float, str]] = []  # heap of (end time, id)
    now = 0.0
    while pending or queue or running:
        ready = [j for j in pending if not waiting[j.id]]
        ids = {j.id for j in ready}
        pending = [j for j in pending if j.id not in ids]
        queue += ready
        if by_level:
            queue.sort(key=lambda j: -level[j.id])  # stable: list order among equals
        while queue and len(running) < workers:
            j = queue.pop(0)
            heapq.heappush(running, (now + wall[j.id], j.id))
        now, done = heapq.heappop(running)
        for w in waiting.values():
            w.discard(done)
    return now


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_dir")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale", action="append", default=[], metavar="KIND=F",
                    help="multiply the time of every job of KIND by F (a projection; see the docstring)")
    args = ap.parse_args()
    study_dir = Path(args.study_dir)
    wall, span = measured(study_dir)
    jobs = [j for j in expand(load_study(study_dir)) if j.id in wall]
    for kind, factor in (a.split("=") for a in args.scale):
        scaled = [j for j in jobs if j.kind == kind]
        if not scaled:
            raise SystemExit(f"--scale: no finished job of kind {kind!r}")
        for j in scaled:
            wall[j.id] *= float(factor)
        print(f"projection: {len(scaled)} {kind} jobs' times x {float(factor):.3f}")
    busy = sum(wall[j.id] for j in jobs)
    print(f"{len(jobs)} jobs, {busy / 60:.1f} job-minutes; measured span {span / 60:.1f} min")
    base = replay(jobs, wall, args.workers, by_level=False)
    for name, by_level in [("first come first served", False), ("level rule", True)]:
        t = replay(jobs, wall, args.workers, by_level)
        print(f"{name:>24}: {t / 60:6.1f} min, workers busy {busy / args.workers / t:.0%}, "
              f"{base / t:.2f}x against first come first served")


if __name__ == "__main__":
    main()
