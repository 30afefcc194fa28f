"""What each job of an LLM-track study does (the jobs themselves: `study/llm_spec.py`).

Artifacts are written into a temporary directory that `study/jobs.py: run_job` renames into
place; evaluations return one metrics row per budget, which run_job stores as one record.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from veriscale.config import ConfigError, deep_merge, from_dict
from veriscale.learn.text_lm import resolve_model
from veriscale.policy.checkpoint import write_json_atomic
from veriscale.policy.hf import HFConfig
from veriscale.tasks.gym import GymConfig, GymTask

DRAW_FILE = "draw.json"


def stage_config(label: str, overrides: dict, n: int, seed: int):
    """The config of learner `label` (sft | verifier | rl) at one grid point: the study's
    overrides plus the point's n and seed; a bad override raises ConfigError naming the field."""
    from veriscale.learn.text_rl import TextRLConfig
    from veriscale.learn.text_sft import TextSFTConfig
    from veriscale.learn.text_verifier import TextVerifierConfig

    cls, point = {"sft": (TextSFTConfig, {"n": n, "data_seed": seed, "optim": {"seed": seed}}),
                  "verifier": (TextVerifierConfig, {"optim": {"seed": seed}}),
                  "rl": (TextRLConfig, {"n": n, "seed": seed, "data_seed": seed})}[label]
    try:
        return from_dict(cls, deep_merge(overrides, point))
    except ConfigError as e:
        raise ConfigError(f"{label}.{e}") from None


def check_llm_study(study) -> None:
    """Validate the learner overrides and find the base model, before any work starts."""
    for label in ("sft", "verifier", "rl"):
        stage_config(label, getattr(study, label), min(study.n), study.seeds[0])
    if study.backend == "vllm":
        from veriscale.policy.vllm import check_vllm

        check_vllm()
    resolve_model(study.model)


def _quiet() -> None:
    """A sweep shows one bar across runs: silence transformers' own loading/saving bars too."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _task(c: dict) -> GymTask:
    return GymTask(from_dict(GymConfig, c["task"]))


def _sampler(c: dict, policy_dir: Path | None, *, trains: bool = False):
    """The sampler of a policy (the base model when policy_dir is None). A learner (`trains`)
    always gets the transformers one, which holds the trainable model: with the vLLM backend,
    vLLM samples the evaluation draws and the labelled samples, and RL samples with transformers
    because its policy changes every step."""
    from veriscale.policy.hf import load_text_sampler

    hf = from_dict(HFConfig, {**c["hf"], "progress": False})
    return load_text_sampler(policy_dir or resolve_model(c["model"]), hf, backend="hf" if trains else c["backend"])


def train_llm_artifact(kind: str, c: dict, dep_dir, out: Path) -> None:
    """Train/sample the artifact `kind` with config `c` into `out`; `dep_dir(id)` is an artifact's directory."""
    _quiet()
    task = _task(c)
    meta = {"model": c["model"], "task": c["task"]}
    if kind == "llm_draw":
        _draw(c, task, dep_dir(c["policy"]) if c["policy"] else None, out)
        return
    sampler = _sampler(c, None, trains=kind != "llm_samples")  # every learner starts from the base policy
    if kind == "llm_samples":
        from veriscale.learn.text_samples import SamplesConfig, draw_samples, write_samples

        cfg = from_dict(SamplesConfig, c["cfg"])
        prompts = task.prompts("train", c["n"], c["seed"])
        rows = draw_samples(sampler, task, prompts, cfg.r, c["H"], temperature=cfg.temperature, seed=c["seed"])
        write_samples(out, rows, {**meta, "n": c["n"], "data_seed": c["seed"], "H": c["H"], "r": cfg.r})
    elif kind == "llm_sft":
        from veriscale.learn.text_sft import train_text_sft

        sft = stage_config("sft", deep_merge(c["cfg"], {"expert": c["expert"]}), c["n"], c["seed"])
        train_text_sft(sampler, task, sft, out, samples_dir=dep_dir(c["samples"]) if c["samples"] else None,
                       meta=meta)
    elif kind == "llm_verifier":
        from veriscale.learn.text_verifier import train_text_verifier

        train_text_verifier(sampler, task, stage_config("verifier", c["cfg"], c["n"], c["seed"]), out, samples_dir=dep_dir(c["samples"]), meta=meta)
    elif kind == "llm_rl":
        from veriscale.learn.text_rl import train_text_rl

        train_text_rl(sampler, task, stage_config("rl", c["cfg"], c["n"], c["seed"]), c["H"], out, meta=meta)
    else:
        raise ValueError(f"unknown LLM artifact kind {kind!r}")


def _draw(c: dict, task: GymTask, policy_dir: Path | None, out: Path) -> None:
    """Sample the evaluation traces of one policy: `per_prompt` traces of at most `width` tokens
    per held-out prompt (with budget forcing at H = width when `forcing` is set)."""
    from veriscale.policy.forcing import BudgetForcing, forced_sample

    sampler = _sampler(c, policy_dir)
    prompts = task.prompts("test", c["prompts"], 0)  # every method and seed: the same prompts
    rep = [p for p in prompts for _ in range(c["per_prompt"])]
    if c["forcing"] is not None:
        ro = forced_sample(sampler, rep, c["width"], from_dict(BudgetForcing, c["forcing"]),
                           temperature=c["temperature"], seed=c["seed"])
    else:
        ro = sampler.sample(rep, c["width"], temperature=c["temperature"], seed=c["seed"])
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / DRAW_FILE, {"width": c["width"], "per_prompt": c["per_prompt"],
                                        "ids": [ro.tokens[k, :ro.counts[k]].tolist() for k in range(len(rep))]})


def _load_draw(directory: Path, tokenizer, pad_id: int):
    from veriscale.policy.hf import text_rollouts

    d = json.loads((directory / DRAW_FILE).read_text())
    return text_rollouts(tokenizer, d["ids"], d["width"], pad_id), d["per_prompt"]


def evaluate_llm(c: dict, dep_dir) -> list[dict]:
    """One metrics row per budget for the evaluation job config `c` (see llm_spec)."""
    from transformers import AutoTokenizer

    from veriscale.search import Pool, budget_record, search_budgets

    _quiet()
    task = _task(c)
    prompts = task.prompts("test", c["prompts"], 0)
    tok = AutoTokenizer.from_pretrained(resolve_model(c["model"]), local_files_only=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rows = []
    if c["method"] in ("bon", "maj", "wmaj"):
        ro, N = _load_draw(dep_dir(c["draws"][str(c["horizon"])]), tok, pad)
        scores = None
        rep = [p for p in prompts for _ in range(N)]
        if c["verifier"]:
            from veriscale.learn.text_verifier import load_text_verifier

            verifier = load_text_verifier(dep_dir(c["verifier"]), from_dict(HFConfig, {**c["hf"], "progress": False}))
            scores = verifier.score(rep, ro).view(len(prompts), N, -1)
        pool = Pool(task, prompts, ro, N, scores)
        rows = search_budgets(pool, c["budgets"], c["method"])
    else:
        for H in c["budgets"]:
            key = str(H) if str(H) in c["draws"] else str(c["horizon"])  # forced: one draw per budget
            ro, _ = _load_draw(dep_dir(c["draws"][key]), tok, pad)
            cut = ro.truncate(H)  # re-graded at H: the final answer of a cut trace can differ
            T = task.check(prompts, cut)
            rows.append(budget_record(T, cut.counts, torch.zeros_like(cut.counts), H))
    return [{"method": c["method"], **r} for r in rows]
