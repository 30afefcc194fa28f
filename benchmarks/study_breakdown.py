"""Where a finished study's time went: training time per artifact kind (pretraining, SFT,
verifier, RL) and evaluation time per method, from the wall times stored with each artifact
(job.json) and each record. Times are per job; a sweep runs `--workers` jobs at once, so the
sum exceeds the study's wall time by about that factor.

    python benchmarks/study_breakdown.py runs/didactic-quick
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from veriscale.study.store import load_records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_dir")
    args = ap.parse_args()
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for job in sorted(Path(args.study_dir, "artifacts").glob("*/job.json")):
        j = json.loads(job.read_text())
        kind = {"base": "pretraining"}.get(j["kind"], j["kind"])
        if "rl" == j["kind"]:
            kind = f"rl ({j['config']['reward']})"
        total[kind] += j.get("wall_s", 0.0)
        count[kind] += 1
    for rec in load_records(args.study_dir):
        c = rec["config"]
        kind = f"eval {c['method']}" + (f":{c['accounting']}" if c.get("accounting") else "")
        total[kind] += rec.get("wall_s", 0.0)
        count[kind] += 1
    grand = sum(total.values())
    print(f"{'stage':28s} {'jobs':>5s} {'seconds':>9s} {'share':>6s}")
    for kind in sorted(total, key=lambda k: -total[k]):
        print(f"{kind:28s} {count[kind]:5d} {total[kind]:9.1f} {total[kind] / grand:6.1%}")
    print(f"{'all jobs (summed)':28s} {sum(count.values()):5d} {grand:9.1f}")


if __name__ == "__main__":
    main()
