"""What each learner of a study did, seed by seed, as Markdown from its stored records: the
verifier (kept step, how far it ran, held-out loss and AUCs), RL (steps, why it stopped, reward
and KL), SFT (traces, kept step, NLL before and after) and the labels each consumed. The report's
learners table gives seed means; this one shows whether the seeds agree.

    python benchmarks/learner_seeds.py runs/llm
"""

from __future__ import annotations

import argparse
from pathlib import Path

from veriscale.study.store import load_records


def num(v, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def verifier_row(v: dict) -> list[str]:
    ran = max((p["step"] for p in v.get("curve", [])), default=-1)
    k, s = v["kept"], v["start"]
    return [f"{v['best_step']} of {v['steps_planned']} (ran to {ran})",
            f"{num(s['heldout_loss'])} → {num(k['heldout_loss'])}",
            f"{num(k.get('heldout_auc_at_length'))} / {num(k.get('heldout_auc_final'))}"]


def rl_row(r: dict) -> list[str]:
    return [f"{r['steps']} ({r['stopped']})", f"{num(r['reward_first'])} → {num(r['reward_last'])}",
            num(r.get("kl_last"))]


def sft_row(s: dict, data: dict) -> list[str]:
    nll = ("test", s["test_nll_before"], s["test_nll_after"]) if s.get("test_nll_before") is not None \
        else ("validation", s.get("val_nll_before"), s.get("val_nll_after"))
    traces = data.get("expert_traces", 0)
    return [str(traces), f"{s['best_step']} of {s['steps_planned']}", f"{nll[0]} {num(nll[1])} → {num(nll[2])}"]


TABLES = {  # learner -> (columns after seed and method, the row builder)
    "verifier": (["kept step", "held-out loss, start → kept", "AUC at equal length / final prefix"], verifier_row),
    "rl": (["steps (stop)", "reward, first → last fifth", "KL, last fifth"], rl_row),
    "sft": (["traces", "kept step", "NLL before → after"], sft_row),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_dir", type=Path)
    a = ap.parse_args()
    seen: dict[str, dict[tuple, list[str]]] = {name: {} for name in TABLES}
    labels: dict[tuple, int] = {}
    for r in load_records(a.study_dir):
        c = r["config"]
        key = (c.get("heterogeneity"), c.get("n"), c["seed"])
        method = c["method"].split(":")[0]
        labels[(method, *key)] = (r.get("data") or {}).get("labels", 0)
        for name, (_, build) in TABLES.items():
            got = (r.get("learner") or {}).get(name)
            if got is None:
                continue
            # the verifier is shared by every method that reads it: one row per training run
            row_key = (name if name == "verifier" else method, *key)
            args = (got, r.get("data") or {}) if name == "sft" else (got,)
            seen[name][row_key] = build(*args)
    for name, (cols, _) in TABLES.items():
        if not seen[name]:
            continue
        print(f"\n**{name}**\n")
        print("| method | level | n | seed | " + " | ".join(cols) + " | labels |")
        print("|---" * (len(cols) + 5) + "|")
        for (method, het, n, seed), cells in sorted(seen[name].items(), key=lambda kv: tuple(map(str, kv[0]))):
            lab = labels.get(("bon" if method == "verifier" else method, het, n, seed), "n/a")
            print(f"| {method} | {het} | {n} | {seed} | " + " | ".join(cells) + f" | {lab} |")
    print("\n**labels per method** (ground-truth verdicts consumed; seeds listed)\n")
    print("| method | level | n | labels per seed |\n|---|---|---|---|")
    grouped: dict[tuple, list[str]] = {}
    for (method, het, n, seed), lab in sorted(labels.items(), key=lambda kv: tuple(map(str, kv[0]))):
        grouped.setdefault((method, het, n), []).append(f"{lab}")
    for (method, het, n), labs in grouped.items():
        print(f"| {method} | {het} | {n} | {', '.join(labs)} |")


if __name__ == "__main__":
    main()
