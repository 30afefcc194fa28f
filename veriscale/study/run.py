"""What each job of a study does (the jobs themselves: study/jobs.py), for any policy and task.

`make_artifact` writes a base, samples, learner, draw or scores directory (a verifier's scores of
a search pool, read by every method that selects from that pool); `evaluate` grades an eval
job's draws into one metrics row per budget; `learner_summary` states what the method's
learners did and the data they consumed. `dep(id)` is an artifact's directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from safetensors.torch import load_file, save_file

from veriscale.atomic import write_json_atomic
from veriscale.config import from_dict
from veriscale.evaluate import diagnose_policy, draw, grade_search, grade_sequential
from veriscale.learn import samples as samples_
from veriscale.learn.pretrain import PretrainConfig, pretrain
from veriscale.learn.rl import RLConfig, train_rl
from veriscale.learn.sft import SFTConfig, train_sft
from veriscale.learn.verifier import VerifierConfig, load_verifier, train_verifier
from veriscale.policy.base import PolicyError, sha256_file
from veriscale.policy.forcing import BudgetForcing
from veriscale.policy.load import load_policy
from veriscale.policy.smollm2 import ensure_converted
from veriscale.policy.text import HFConfig
from veriscale.search import repeat_each
from veriscale.study.methods import METHODS
from veriscale.tasks.files import FilesConfig
from veriscale.tasks.gym import GymConfig
from veriscale.tasks.load import is_text, make_task
from veriscale.tasks.planted import ExpertSampler, PlantedConfig

DRAW_FILE = "draw.json"
SCORES_FILE = "scores.safetensors"
Dep = Callable[[str], Path]


def task_of(c: dict):
    spec, cfg = c["task"], c["task_cfg"]
    if spec == "planted":
        return make_task(spec, planted=from_dict(PlantedConfig, cfg))
    if spec.startswith("gym:"):
        return make_task(spec, gym=from_dict(GymConfig, cfg))
    return make_task(spec, files=from_dict(FilesConfig, cfg))


def _hf(c: dict) -> HFConfig:
    return from_dict(HFConfig, {**c.get("hf", {}), "progress": False})


def base_spec_path(spec: str) -> Path:
    """The weights file of a policy spec (a run directory, hf:PATH, smollm2), for its digest."""
    root = ensure_converted() if spec == "smollm2" else Path(spec[3:] if spec.startswith("hf:") else spec)
    return root / "model.safetensors"


def spec_digest(spec: str) -> str | None:
    """The digest of a policy spec's weights (None when they are not one safetensors file)."""
    path = base_spec_path(spec)
    return sha256_file(path) if path.is_file() else None


def base_policy(c: dict, dep: Dep, sampler: str = "hf"):
    """The study's base policy: its pretraining artifact, or the spec, whose weights must still
    be the ones the study was expanded with."""
    if c["base"]:
        return load_policy(dep(c["base"]))
    want = c.get("base_sha256")
    if want and spec_digest(c["base_spec"]) != want:
        raise PolicyError(f"{c['base_spec']}: the weights changed since this study was expanded")
    return load_policy(c["base_spec"], hf=_hf(c), sampler=sampler)


def make_artifact(kind: str, c: dict, dep: Dep, out: Path) -> None:
    """Write the artifact `kind` with config `c` into `out`."""
    _quiet(c)
    task = task_of(c)
    meta: dict = {}
    if kind == "base":
        pretrain(from_dict(PretrainConfig, {**c["pretrain"], "task": c["task_cfg"], "out": str(out)}))
    elif kind == "draw":
        _draw(c, task, dep, out)
    elif kind == "scores":
        verifier = load_verifier(dep(c["verifier"]), task, _hf(c))
        d = json.loads((dep(c["draw"]) / DRAW_FILE).read_text())
        prompts = repeat_each(task.prompts("test", c["prompts"], 0), d["per_prompt"])
        out.mkdir(parents=True, exist_ok=True)  # (B * per_prompt, width) score of every prefix
        rollouts = verifier.policy.rollouts(d["ids"], d["width"])  # the draw file, read once
        save_file({"scores": verifier.score(prompts, rollouts)}, str(out / SCORES_FILE))
    elif kind == "samples":
        cfg = from_dict(samples_.SamplesConfig, c["cfg"])
        s = samples_.draw(base_policy(c, dep, c["sampler"]), task, cfg, c["n"], c["H"], c["seed"], c["seed"])
        samples_.write(out, s, {**meta, "n": c["n"], "data_seed": c["seed"], "val_prompts": cfg.val_prompts})
    else:  # a learner: it starts from the base policy, trained with transformers when it is text
        policy = base_policy(c, dep)
        s = samples_.read(dep(c["samples"]), task, policy) if c.get("samples") else None
        if kind == "sft":
            train_sft(policy, task, from_dict(SFTConfig, c["cfg"]), out, samples=s, meta=meta)
        elif kind == "verifier":
            train_verifier(policy, task, from_dict(VerifierConfig, c["cfg"]), out, samples=s, meta=meta)
        elif kind == "rl":
            verifier = load_verifier(dep(c["verifier"]), task, _hf(c)) if c["verifier"] else None
            train_rl(policy, task, from_dict(RLConfig, c["cfg"]), out, verifier=verifier, meta=meta)
        else:
            raise ValueError(f"unknown artifact kind {kind!r}")


def _draw(c: dict, task, dep: Dep, out: Path) -> None:
    """Sample the evaluation traces of one policy: `per_prompt` traces of at most `width` tokens
    per held-out prompt (budget-forced at H = width when `forcing` is set)."""
    if c["policy"] == "expert":
        sampler = ExpertSampler(task)
    elif c["policy"]:
        sampler = load_policy(dep(c["policy"]), hf=_hf(c), sampler=c["sampler"])
    else:
        sampler = base_policy(c, dep, c["sampler"])
    forcing = from_dict(BudgetForcing, c["forcing"]) if c["forcing"] else None
    ro = draw(sampler, task.prompts("test", c["prompts"], 0), c["per_prompt"], c["width"],
              temperature=c["temperature"], seed=c["seed"], forcing=forcing)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / DRAW_FILE, {"width": c["width"], "per_prompt": c["per_prompt"],
                                        "ids": [ro.tokens[k, :ro.counts[k]].tolist() for k in range(len(ro))]})


def _read_draw(directory: Path, policy):
    d = json.loads((directory / DRAW_FILE).read_text())
    return policy.rollouts(d["ids"], d["width"])


def evaluate(c: dict, dep: Dep) -> list[dict]:
    """One metrics row per budget for the evaluation job config `c` (see study/jobs.py)."""
    _quiet(c)
    task, e = task_of(c), c["eval"]
    if c["method"] == "diagnose":
        return [diagnose_policy(base_policy(c, dep), task, budget=c["budgets"][0], prompts=e["prompts"],
                                samples=e["samples"], temperature=e["temperature"], seed=c["seed"])]
    m = METHODS[c["method"]]
    decoder = base_policy(c, dep)  # every policy of a study shares the base's tokens
    prompts = task.prompts("test", e["prompts"], 0)  # every method and seed: the same prompts
    draws = {int(h): _read_draw(dep(d), decoder) for h, d in c["draws"].items()}
    if m.search:
        scores = load_file(str(dep(c["scores"]) / SCORES_FILE))["scores"] if c.get("scores") else None
        k = 1 if m.name == "early_stop" else e["search_n"]
        rows = grade_search(m.evaluation, task, repeat_each(prompts, e["samples"]), draws[max(draws)], k,
                            c["budgets"], scores=scores, accounting=c["accounting"] or "shared")
    else:
        rows = grade_sequential(task, prompts, e["samples"], lambda H: draws.get(H, draws[max(draws)]), c["budgets"])
    return [{"method": m.evaluation, **r} for r in rows]


def _read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(veriscale.json, metrics.jsonl records) of a learner's run directory."""
    meta = json.loads((run_dir / "veriscale.json").read_text())
    log = run_dir / "metrics.jsonl"
    return meta, [json.loads(line) for line in log.read_text().splitlines() if line] if log.exists() else []


def learner_summary(c: dict, dep: Dep) -> dict[str, Any]:
    """What the method's learners did and the data they consumed, for the record.

    `data`: prompts, expert traces (VF), reward-labelled base traces (the verifier's), reward
    queries (online RL: checker or verifier calls), validation traces (used only to stop).
    `learner`: per learner, the evidence that it moved from its start (SFT: validation and test
    NLL of the expert before/after; verifier: validation loss and AUC at its start and at the
    kept step; RL: mean reward over its first and last steps) and where it stopped, with its
    training curve (`curve`: the verifier's validation loss and final-prefix AUC at every
    evaluation, RL's reward at every step) for the report's learner figure.
    """
    data = {"prompts": 0, "expert_traces": 0, "labelled_traces": 0, "reward_queries": 0, "validation_traces": 0}
    learner: dict = {}
    m = METHODS.get(c["method"])
    if m is None or not m.uses_data:
        return {"data": data, "learner": learner}
    if c["verifier"]:  # the verifier that scores the search, or that RL trained against
        vmeta, vlog = _read_run(dep(c["verifier"]))
        data.update(prompts=vmeta["run"]["n"], labelled_traces=vmeta["training_traces"],
                    validation_traces=vmeta["validation_traces"])
        learner["verifier"] = {"best_step": vmeta["best_step"], "steps_planned": vmeta["steps_planned"],
                               "select": vmeta["run"].get("select", "loss"),
                               "start": {k: v for k, v in vlog[0].items() if k.startswith("heldout")},
                               "kept": vmeta["heldout"],
                               "curve": [{"step": r["step"], "heldout_loss": r["heldout_loss"],
                                          "heldout_auc_final": r["heldout_auc_final"]}
                                         for r in vlog if "heldout_loss" in r]}
    if m.learner == "sft":
        pmeta, _ = _read_run(dep(c["policy"]))
        data.update(prompts=pmeta["run"]["n"], expert_traces=pmeta["training_traces"],
                    validation_traces=pmeta["validation_traces"])
        learner["sft"] = {k: pmeta[k] for k in ("best_step", "steps_planned", "test_nll_before", "test_nll_after",
                                                "val_nll_before", "val_nll_after")}
    if m.learner == "rl":
        pmeta, plog = _read_run(dep(c["policy"]))
        data.update(prompts=pmeta["training_prompts"], reward_queries=pmeta["reward_queries"])
        k = max(1, len(plog) // 5)  # first and last fifth of the steps
        mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
        learner["rl"] = {"steps": len(plog), "reward_first": mean(plog[:k], "reward"),
                         "reward_last": mean(plog[-k:], "reward"), "return_first": mean(plog[:k], "return"),
                         "return_last": mean(plog[-k:], "return"), "kl_last": mean(plog[-k:], "kl"),
                         "stopped": pmeta.get("stopped", "steps"),
                         "curve": [{"step": r["step"], "reward": r["reward"]} for r in plog]}
    return {"data": data, "learner": learner}


def _quiet(c: dict) -> None:
    """A sweep shows one bar across runs: silence transformers' own loading/saving bars too
    (imported only for text tasks: the planted task never loads transformers)."""
    if is_text(c["task"]):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
