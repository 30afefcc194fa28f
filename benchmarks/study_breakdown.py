"""Where a finished study's time went: time per artifact kind (pretraining, samples, SFT,
verifier, RL, draws, a verifier's scores of a search pool) and grading time per evaluation method, from the wall times stored with
each artifact (job.json) and each record of the jobs the study expands to. Times are per job; a sweep runs `--workers` jobs at
once, so the sum exceeds the study's wall time by about that factor.

Evaluation traces are sampled by `draw` jobs (one per policy, sampling width and pool size,
shared by every evaluation that reads them) and scored by the verifier once per pool (`scores`
jobs), so a draw's time is sampling time and an `eval` record's time is grading only. Draws are grouped by the policy they
sample (base, expert, sft, rl with its reward), with search pools (more than one sample per
prompt) and budget-forced draws apart.

    python benchmarks/study_breakdown.py runs/didactic-quick
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from veriscale.study.grid import expand
from veriscale.study.methods import record_label
from veriscale.study.store import load_records
from veriscale.study.sweep import load_study


def stage(j: dict, jobs: dict[str, dict]) -> str:
    """The row an artifact job is summed under."""
    kind, c = j["kind"], j["config"]
    if kind == "base":
        return "pretraining"
    if kind == "rl":
        return f"rl ({c['cfg'].get('reward', 'outcome')})"
    if kind != "draw":
        return kind  # samples, sft, verifier
    policy = c.get("policy")
    if policy is None:
        src = "base"
    elif policy == "expert":
        src = "expert"
    elif policy in jobs:  # a trained policy of this study
        src = stage(jobs[policy], jobs)
    else:
        src = policy.split("-")[0]
    label = f"draw {src}"
    if c.get("per_prompt", 1) > 1:
        label += f" pool {c['per_prompt']}x{c['width']}"
    if c.get("forcing"):
        label += " forced"
    return label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_dir")
    args = ap.parse_args()
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    wanted = {j.id for j in expand(load_study(args.study_dir))}  # not artifacts of an earlier grid in the same directory
    jobs = {}
    for job in sorted(Path(args.study_dir, "artifacts").glob("*/job.json")):
        j = json.loads(job.read_text())
        if j["id"] in wanted:
            jobs[j["id"]] = j
    for j in jobs.values():
        kind = stage(j, jobs)
        total[kind] += j.get("wall_s", 0.0)
        count[kind] += 1
    for rec in load_records(args.study_dir):
        if rec["id"] not in wanted:
            continue
        kind = f"eval {record_label(rec['config'])}"
        total[kind] += rec.get("wall_s", 0.0)
        count[kind] += 1
    grand = sum(total.values())
    print(f"{'stage':28s} {'jobs':>5s} {'seconds':>9s} {'share':>6s}")
    for kind in sorted(total, key=lambda k: -total[k]):
        print(f"{kind:28s} {count[kind]:5d} {total[kind]:9.1f} {total[kind] / grand:6.1%}")
    print(f"{'all jobs (summed)':28s} {sum(count.values()):5d} {grand:9.1f}")


if __name__ == "__main__":
    main()
