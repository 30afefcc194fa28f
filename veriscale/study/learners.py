"""What the learners of an evaluated method did and the data they consumed, read back from their
run directories for the method's record (the report's data and learner tables and figures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from veriscale.study.methods import Method
from veriscale.study.world import Dep


def read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(veriscale.json, metrics.jsonl records) of a learner's run directory."""
    meta = json.loads((run_dir / "veriscale.json").read_text())
    log = run_dir / "metrics.jsonl"
    return meta, [json.loads(line) for line in log.read_text().splitlines() if line] if log.exists() else []


def learner_summary(m: Method | None, policy: str | None, verifier: str | None, dep: Dep) -> dict[str, Any]:
    """What the method's learners did and the data they consumed, for the record.

    `data`: prompts, expert traces (VF), reward-labelled base traces (the verifier's, and the
    samples search-trace SFT is built from), reward queries (online RL: checker or verifier
    calls), validation traces (used only to stop), and `labels`: every ground-truth verdict the
    method consumed (expert and labelled traces, validation labels, checker queries; a verifier's
    scores are not ground truth), the count that data-matched comparisons equate.
    `learner`: per learner, the evidence that it moved from its start (SFT: validation and test
    NLL of the expert before/after; verifier: validation loss and AUC at its start and at the
    kept step; RL: mean reward over its first and last steps) and where it stopped, with its
    training curve (`curve`: the verifier's validation loss and final-prefix AUC at every
    evaluation, RL's reward at every step) for the report's learner figure.
    """
    data = {"prompts": 0, "expert_traces": 0, "labelled_traces": 0, "reward_queries": 0, "validation_traces": 0,
            "labels": 0}
    learner: dict = {}
    if m is None or not m.uses_data:
        return {"data": data, "learner": learner}
    if verifier:  # the verifier that scores the search, or that RL trained against
        vmeta, vlog = read_run(dep(verifier))
        # an ensemble's log holds each member's evaluations in turn: its start and curve are member 0's
        vlog = [r for r in vlog if r.get("member", 0) == 0]
        data.update(prompts=vmeta["run"]["n"], labelled_traces=vmeta["training_traces"],
                    validation_traces=vmeta["validation_traces"],
                    labels=vmeta["training_traces"] + vmeta["validation_traces"])
        learner["verifier"] = {"best_step": vmeta["best_step"], "steps_planned": vmeta["steps_planned"],
                               "select": vmeta["run"].get("select", "loss"),
                               "start": {k: v for k, v in vlog[0].items() if k.startswith("heldout")},
                               "kept": vmeta["heldout"],
                               "curve": [{"step": r["step"], "heldout_loss": r["heldout_loss"],
                                          "heldout_auc_final": r["heldout_auc_final"]}
                                         for r in vlog if "heldout_loss" in r]}
    if m.learner == "sft":
        pmeta, _ = read_run(dep(policy))
        if pmeta["run"]["expert"] == "search":  # built from checked base samples: their verdicts are its labels
            labelled = pmeta["labelled_traces"]
            data.update(prompts=pmeta["run"]["n"], expert_traces=pmeta["training_traces"], labelled_traces=labelled,
                        labels=labelled, validation_traces=pmeta["validation_traces"])
        else:
            data.update(prompts=pmeta["run"]["n"], expert_traces=pmeta["training_traces"],
                        validation_traces=pmeta["validation_traces"],
                        labels=pmeta["training_traces"] + pmeta["validation_traces"])
        learner["sft"] = {k: pmeta[k] for k in ("best_step", "steps_planned", "test_nll_before", "test_nll_after",
                                                "val_nll_before", "val_nll_after")}
        if "data_T" in pmeta:  # the cloned traces' first-success indices (absent in runs older than the field)
            learner["sft"]["data_T"] = pmeta["data_T"]
    if m.learner == "rl":
        pmeta, plog = read_run(dep(policy))
        data.update(prompts=pmeta["training_prompts"], reward_queries=pmeta["reward_queries"])
        if pmeta["run"]["reward"] != "verifier":  # the checker's verdicts
            data["labels"] += pmeta["reward_queries"]
        k = max(1, len(plog) // 5)  # first and last fifth of the steps
        mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
        learner["rl"] = {"steps": len(plog), "reward_first": mean(plog[:k], "reward"),
                         "reward_last": mean(plog[-k:], "reward"), "return_first": mean(plog[:k], "return"),
                         "return_last": mean(plog[-k:], "return"), "kl_last": mean(plog[-k:], "kl"),
                         "stopped": pmeta.get("stopped", "steps"),
                         "curve": [{"step": r["step"], "reward": r["reward"]} for r in plog]}
    return {"data": data, "learner": learner}


def shaped_base_summary(run_dir: Path) -> dict[str, Any]:
    """How a text study's shaped base was built (learn/shape.py), for its diagnosis record: its
    level, the trace tokens and traces it trained on, where it stopped, its validation NLL
    before/after, and the first-success indices of its training traces (their spread is the
    heterogeneity it was shaped to have)."""
    meta, _ = read_run(run_dir)
    return {"level": meta["shaped_level"], "tokens": meta["shape_tokens"], "budget": meta["shape_budget"],
            **{k: meta[k] for k in ("training_traces", "validation_traces", "best_step", "steps_planned",
                                    "val_nll_before", "val_nll_after", "data_T")}}
