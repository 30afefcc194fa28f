"""The VB − VF gap seed by seed, as Markdown from a study's stored records: per level, n and seed,
the J_H gap in tokens (mean over the evaluation prompts) at every budget, with the gap's change
from the smallest to the largest budget. The verdicts pool the seeds; this table shows whether
the seeds agree.

    python benchmarks/seed_gaps.py runs/llm-heterogeneity --vb rl_outcome --vf sft_search
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from veriscale.study.store import load_records, rows


def table(study_dir: Path, vb: str, vf: str) -> list[str]:
    flat = rows(load_records(study_dir))
    J = {(r["heterogeneity"], r["n"], r["method"], r["seed"], r["budget"]): r["J"] for r in flat}
    methods = sorted({k[2] for k in J})
    for m in (vb, vf):
        if m not in methods:
            raise SystemExit(f"{study_dir}: no records of method {m!r}; its methods are {', '.join(methods)}")
    budgets = sorted({k[4] for k in J if k[2] in (vb, vf)})  # a bases-only run may add budgets of `base` alone
    # the study's order of levels; a task's own label (a gym task's) is not among them
    levels = json.loads((study_dir / "study.json").read_text())["heterogeneity"]
    order = lambda c: (levels.index(c[0]) if c[0] in levels else len(levels), c[1] or 0, c[2])  # noqa: E731
    cells = sorted({k[:2] + (k[3],) for k in J if k[2] == vb}, key=order)
    out = [f"| level | n | seed | {' | '.join(f'gap at H = {H}' for H in budgets)} | "
           f"H = {budgets[-1]} − H = {budgets[0]} |", "|---|---|---|" + "---|" * (len(budgets) + 1)]
    for het, n, seed in cells:
        gap = {H: J[(het, n, vb, seed, H)] - J[(het, n, vf, seed, H)] for H in budgets
               if (het, n, vb, seed, H) in J and (het, n, vf, seed, H) in J}
        growth = f"{gap[budgets[-1]] - gap[budgets[0]]:+.1f}" if len(gap) == len(budgets) else "n/a"
        out.append(f"| {het} | {n} | {seed} | "
                   + " | ".join(f"{gap[H]:+.1f}" if H in gap else "n/a" for H in budgets) + f" | {growth} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path, help="study directories with stored records")
    ap.add_argument("--vb", default="rl_outcome", help="the VB method's report label (default: rl_outcome)")
    ap.add_argument("--vf", default="sft_search", help="the VF method's report label (default: sft_search)")
    args = ap.parse_args()
    for d in args.studies:
        lines = table(d, args.vb, args.vf)
        print(f"{d}: J_H gap {args.vb} − {args.vf} in tokens, per seed\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
