"""Every method against one reference, at every budget, as Markdown from a study's stored records:
the difference in success@H and in J_H/H with its 95% interval over seeds and prompts, paired by
both (the verdicts' interval, veriscale/study/resample.py), beside each side's tokens drawn per
problem. The verdict table reads a few of these differences; this one lists them all.

    python benchmarks/pair_gaps.py runs/llm                  # against the study's vf_reference
    python benchmarks/pair_gaps.py runs/llm --ref sft --budgets 256
"""

from __future__ import annotations

import argparse
from pathlib import Path

from veriscale.study.analysis import Report
from veriscale.study.sweep import load_study


def band(iv: dict | None) -> str:
    if not iv:
        return "n/a"
    if iv.get("lo") is None:
        return f"{iv['mean']:+.3f}"
    return f"{iv['mean']:+.3f} [{iv['lo']:+.3f}, {iv['hi']:+.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_dir", type=Path)
    ap.add_argument("--ref", help="the reference method's label (default: the study's vf_reference)")
    ap.add_argument("--budgets", help="comma-separated budgets (default: every budget)")
    a = ap.parse_args()
    rep = Report(load_study(a.study_dir), a.study_dir)
    ref = a.ref or rep.vf
    budgets = [int(b) for b in a.budgets.split(",")] if a.budgets else rep.budgets
    for het in rep.hets:
        n = rep.nmax
        print(f"\n{a.study_dir}: each method − {ref} (level {het}, n = {n}; 95% interval over seeds and prompts, "
              "paired by both)\n")
        print("| method | H | success gap | J_H/H gap | tokens: method / reference | how |")
        print("|---|---|---|---|---|---|")
        for label in rep.labels:
            if label == ref:
                continue
            for H in budgets:
                # a method without data (the base) sits at n = None; its cell is read as it is stored
                mine = (het, n if (het, n, label, H) in rep.cells else None, label, H)
                theirs = (het, n if (het, n, ref, H) in rep.cells else None, ref, H)
                if mine not in rep.cells or theirs not in rep.cells:
                    continue
                terms = [(1.0, mine), (-1.0, theirs)]
                s, j = rep.contrast("success", terms), rep.contrast("J_norm", terms)
                tok = [sum(r["tokens"] for r in rep.cells[c].values()) / len(rep.cells[c]) for c in (mine, theirs)]
                print(f"| {label} | {H} | {band(s)} | {band(j)} | {tok[0]:.1f} / {tok[1]:.1f} | "
                      f"{(s or {}).get('how', 'n/a')} |")


if __name__ == "__main__":
    main()
