"""The verifier-free (VF) learner on a transformers causal LM: SFT on n expert traces.

Objective (SPEC §1, VF), on the n' <= n training prompts that have an expert trace:
    min_theta  - sum_i sum_{h <= |tau_i|} log pi_theta(tau_i,h | x_i, tau_i,<h)  /  sum_i |tau_i|
next-token cross-entropy on completion tokens only (the closing EOS included; the prompt, chat
template included, never carries loss), averaged over tokens. Expert traces (`expert`):
  gold    the task's gold worked solution (`TextProblem.solution`: reasoning-gym's answer_cot, or
          the step-by-step arithmetic of `tasks/gym.py`), ending in "Final answer: N";
  search  a search trace built from checked base samples (`text_samples.py`): the failed
          attempts that precede a prompt's first successful sample (at most `max_failures`),
          then that success, joined by `bridge`. Prompts without a successful sample have no
          trace (rejection sampling), so n' can be below n. These traces are heterogeneous by
          construction: their lengths vary with the number of failures.

A share `heldout` of the traces is held out: their NLL is evaluated every `optim.eval_every`
steps, the best weights are kept (in memory) and training stops after `patience` evaluations
without improvement. With `lora_r > 0` only LoRA adapters (peft) on `lora_targets` are trained
and merged into the weights before saving, so the run directory is a plain transformers model.

Why our own loop and not TRL's SFTTrainer: the masked-completion objective, early stopping on
held-out expert NLL and the metrics.jsonl records are exactly the ones the didactic track's SFT
uses (`loop.train_lm`), so both tracks are trained and logged by one loop; SFTTrainer would add
a second data pipeline (datasets, collators) and a second logging format for the same loss.

Run (the study does this): `train_text_sft(sampler, task, cfg, out, samples_dir=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from veriscale.config import knob, to_dict
from veriscale.learn.loop import BestCheckpoint, OptimConfig, eval_nll, heldout_split, jsonl_log, train_lm
from veriscale.learn.text_lm import (LogitsOf, TrainableSnapshot, completion_batch, freeze_below, pack,
                                     save_text_run)
from veriscale.learn.text_samples import read_samples


@dataclass
class TextSFTOptimConfig(OptimConfig):
    """Our defaults for a ~100M-parameter model on 2 CPU cores (about 160 training tokens/s)."""

    steps: int = knob(30, "optimizer steps (an upper bound: early stopping may end sooner)", min=1)
    batch_size: int = knob(8, "sequences per step", min=1)
    lr: float = knob(2e-5, "peak learning rate (full fine-tuning; raise it for LoRA)", min=0.0)
    warmup: int = knob(3, "linear warm-up steps", min=0)
    weight_decay: float = knob(0.0, "AdamW weight decay", min=0.0)
    eval_every: int = knob(5, "steps between held-out evaluations (early-stopping checks)", min=1)


@dataclass
class TextSFTConfig:
    n: int = knob(64, "n: training prompts (the VF data budget); those with an expert trace are used", min=2)
    expert: Literal["gold", "search"] = knob("gold", "expert traces: gold worked solutions, or search "
                                                     "traces built from checked base samples")
    max_failures: int = knob(3, "search: most failed attempts kept before the success (ours)", min=0)
    bridge: str = knob("\nWait, that is wrong. Let me try again.\n", "search: text joining attempts (ours)")
    heldout: float = knob(0.1, "share of the traces held out for early stopping (ours)", min=0.01, max=0.5)
    patience: int = knob(2, "held-out evaluations without improvement before stopping (0 = never)", min=0)
    train_layers: int = knob(0, "train only the top k decoder blocks (0 = all; ours, for CPU)", min=0)
    lora_r: int = knob(0, "LoRA rank through peft (0 = full fine-tuning)", min=0)
    lora_alpha: int = knob(16, "LoRA alpha", min=1)
    lora_dropout: float = knob(0.0, "LoRA dropout", min=0.0, max=1.0)
    lora_targets: list[str] = knob(["q_proj", "k_proj", "v_proj", "o_proj"], "module names LoRA adapts")
    data_seed: int = knob(0, "seed of the training prompts (the same n prompts as the VB learners)", min=0)
    threads: int = knob(0, "torch CPU threads (0 = torch's default)", min=0)
    optim: TextSFTOptimConfig = field(default_factory=TextSFTOptimConfig)


def search_trace(attempts: list[tuple[str, bool]], max_failures: int, bridge: str) -> str | None:
    """The failed attempts before the first success (at most the last `max_failures` of them),
    then the success, joined by `bridge`; None when no attempt succeeded."""
    first = next((i for i, (_, ok) in enumerate(attempts) if ok), None)
    if first is None:
        return None
    failures = [t for t, _ in attempts[:first]][max(0, first - max_failures):] if max_failures else []
    return bridge.join([*failures, attempts[first][0]])


def expert_traces(problems: Sequence[Any], cfg: TextSFTConfig, tokenizer, samples: list[dict] | None) -> list[
        tuple[int, str]]:
    """(prompt index, expert completion text) for every training prompt that has one."""
    if cfg.expert == "gold":
        missing = [i for i, p in enumerate(problems) if not p.solution]
        if missing:
            raise ValueError(f"expert=gold: {len(missing)} training problems have no gold solution; "
                             "use expert=search")
        return [(i, p.solution) for i, p in enumerate(problems)]
    if samples is None:
        raise ValueError("expert=search needs the checked base samples (samples_dir)")
    by_prompt: dict[int, list[tuple[str, bool]]] = {}
    for row in sorted(samples, key=lambda r: (r["prompt"], r["sample"])):
        text = tokenizer.decode(row["ids"], skip_special_tokens=True).strip()  # no EOS inside a trace
        by_prompt.setdefault(row["prompt"], []).append((text, row["T"] is not None))
    out = []
    for i in sorted(by_prompt):
        trace = search_trace(by_prompt[i], cfg.max_failures, cfg.bridge)
        if trace is not None:
            out.append((i, trace))
    return out


def _apply_lora(model, cfg: TextSFTConfig):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                            target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM"))


def train_text_sft(sampler, task, cfg: TextSFTConfig, out: str | Path, *, samples_dir: str | Path | None = None,
                   meta: dict | None = None) -> Path:
    """Fine-tune `sampler.model` (an HFSampler's model, trained in place) on expert traces of
    the task's n training prompts; writes the run directory `out` and returns it."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok = sampler.tok
    problems = task.prompts("train", cfg.n, cfg.data_seed)
    samples = read_samples(samples_dir) if samples_dir is not None else None
    traces = expert_traces(problems, cfg, tok, samples)
    if len(traces) < 2:
        raise ValueError(f"only {len(traces)} expert trace(s) among {cfg.n} prompts: too few to train and hold out")
    eos = tok.eos_token_id if tok.eos_token_id is not None else int(sampler.eos_ids[0])
    prompt_ids = [sampler.encode(problems[i]) for i, _ in traces]
    completions = [tok(text, add_special_tokens=False).input_ids + [eos] for _, text in traces]
    data = completion_batch(*pack(prompt_ids, completions, sampler.pad_id))
    perm = torch.randperm(len(traces), generator=torch.Generator().manual_seed(cfg.data_seed))
    data = tuple(x[perm] for x in data)
    train, held = heldout_split(len(traces), cfg.heldout)
    model = _apply_lora(sampler.model, cfg) if cfg.lora_r else sampler.model
    if not cfg.lora_r:
        freeze_below(model, cfg.train_layers)
    net = LogitsOf(model)
    snapshot = TrainableSnapshot(model)

    def evaluate() -> dict:
        return {"heldout_nll": eval_nll(net, *(x[held] for x in data), batch_size=8)}

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    best = BestCheckpoint("heldout_nll", cfg.patience, snapshot.take)
    with jsonl_log(out / "metrics.jsonl") as log:
        init = {"step": -1, "traces": len(traces), "completion_tokens": int(data[2].sum()), **evaluate()}
        log(init)
        best.update(init)
        train_lm(net, *(x[train] for x in data), cfg.optim, evaluate=evaluate, log=log, desc="sft", stop=best.update)
    snapshot.restore()
    final = model.merge_and_unload() if cfg.lora_r else model
    final.eval()
    sampler.model = final
    return save_text_run(out, final, tok, {**(meta or {}), "stage": "sft", "run": to_dict(cfg),
                                           "best_step": best.best_step, "traces": len(traces)})
