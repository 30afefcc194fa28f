"""The verdict table and the prediction check of one or more studies, as Markdown, read from the
`summary.json` that `veriscale report` wrote: the tables the README quotes.

    python benchmarks/verdict_tables.py runs/didactic-quick runs/llm runs/llm-terms
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def num(v) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def band(b: dict | None) -> str:
    if not b:
        return "n/a"
    value = b.get("value", b.get("mean"))
    return f"{num(value)} [{num(b.get('lo'))}, {num(b.get('hi'))}]"


def verdicts(s: dict) -> str:
    rows = ["| claim | verdict | measured [95% CI; the row says which] |", "|---|---|---|"]
    rows += [f"| {r['claim']}. {r['title']} | **{r['verdict']}** | {r['measured']} |" for r in s["verdicts"]]
    return "\n".join(rows)


def predictions(s: dict) -> list[str]:
    out = []
    for r in s["prediction_check"]:
        p = r.get("predicted")
        predicted = (f"{band(p['gaps'][-1])}: {r['predicted_sign']}; {r['predicted_growth']}" if p
                     else r["predicted_sign"])
        measured = (f"{band(r.get('measured_gap'))}: {r.get('measured_sign', 'n/a')}; "
                    f"{r.get('measured_growth_sign', 'n/a')}")
        out.append(f"| {r['setting']} | {r['method']} − {r['reference']} | {predicted} | {measured} | "
                   f"{r['sign_check']} / {r['growth_check']} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path, help="study directories with a summary.json")
    a = ap.parse_args()
    pred = ["| setting | VB − VF | predicted gap at H_max (tokens) | measured gap at H_max | sign / growth |",
            "|---|---|---|---|---|"]
    for d in a.studies:
        s = json.loads((d / "summary.json").read_text())
        print(f"{d} (budgets {s['study']['budgets']}, n {s['study']['n']}, seeds {s['study']['seeds']}):\n")
        print(verdicts(s) + "\n")
        pred += predictions(s)
    print("\n".join(pred))


if __name__ == "__main__":
    main()
