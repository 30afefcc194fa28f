"""What validation chose, beside the fixed setting, as Markdown from a study's stored records: per
level, method and budget, the forcing (target, extension share) of a forced method or the N of
shared best-of-N, its validation success against the fixed setting's, and the test success and
tokens drawn of the chosen and the fixed runs (means over seeds; the choices listed per seed).

    python benchmarks/choices_table.py runs/llm-quick runs/didactic
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from veriscale.study.store import load_records, rows


def setting(r: dict) -> str:
    if "forcing" in r:
        f = r["forcing"]
        return f"{f['target']}, {f['extend_share'] or 'off'}"
    return f"N = {r['search']['N']}"


def fixed_label(r: dict) -> str:
    return f"{r['method']}:fixed"


def mean(xs: list[float], digits: int = 3) -> str:
    return f"{sum(xs) / len(xs):.{digits}f}" if xs else "n/a"


def table(study_dir: Path) -> list[str]:
    flat = rows(load_records(study_dir))
    cell = {(r["heterogeneity"], r["n"], r["method"], r["budget"], r["seed"]): r for r in flat}
    chosen = defaultdict(list)  # (level, n, method, H) -> the chosen runs' rows, one per seed
    for r in flat:
        if "forcing" in r or "search" in r:
            chosen[(r["heterogeneity"], r["n"], r["method"], r["budget"])].append(r)
    out = ["| level | n | method | H | chosen (per seed) | validation success: chosen / fixed | "
           "test success: chosen / fixed | tokens: chosen / fixed |", "|---|---|---|---|---|---|---|---|"]
    for (het, n, m, H), rs in sorted(chosen.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2], kv[0][3])):
        rs = sorted(rs, key=lambda r: r["seed"])  # records load in file order, not seed order
        key = "forcing" if "forcing" in rs[0] else "search"
        per_seed = "; ".join(f"seed {r['seed']}: {setting(r)}" for r in rs)
        fixed = [f for r in rs if (f := cell.get((het, n, fixed_label(r), H, r["seed"])))]
        out.append(f"| {het} | {n} | {m} | {H} | {per_seed} | "
                   f"{mean([r[key]['val_success'] for r in rs])} / {mean([r[key]['fixed_val_success'] for r in rs])} | "
                   f"{mean([r['success'] for r in rs])} / {mean([f['success'] for f in fixed])} | "
                   f"{mean([r['tokens'] for r in rs], 1)} / {mean([f['tokens'] for f in fixed], 1)} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path, help="study directories with stored records")
    for d in ap.parse_args().studies:
        print(f"{d}:\n")
        print("\n".join(table(d)) + "\n")


if __name__ == "__main__":
    main()
