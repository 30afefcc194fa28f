"""The verifier-free (VF) learner: behaviour cloning / SFT on n expert traces, for any policy
(policy/base.py) and task.

Objective (SPEC §1, VF): with D = {(x_i, tau_i)}_{i<=n'} expert traces on training prompts,
    min_theta  - sum_i sum_{h <= |tau_i|} log pi_theta(tau_i,h | x_i, tau_i,<h)  /  sum_i |tau_i|,
masked next-token cross-entropy on trace tokens only (EOS included, prompt tokens never, chat
template included), averaged over tokens. Expert traces (`expert`):
  expert       the task's expert: planted, the teacher with `task.expert_q` conditioned on success
               within the horizon (its filler gives the level's heterogeneity); text tasks, the
               gold worked solutions (homogeneous: one short solution per problem);
  homogeneous  the planted task's homogeneous control (filler 0, always right);
  search       search traces from checked base samples (`learn/samples.py`, text tasks): the
               failed attempts before a prompt's first success (at most `max_failures`), then
               that success, joined by `bridge`; then up to `checks` later successful attempts,
               each after `check_bridge`, so the traces also go on after a "Wait" that follows a
               right answer (what s1's extension inserts at evaluation). Prompts without a success have no trace
               (rejection sampling), so n' can be below n; the traces are heterogeneous by
               construction. Without given samples, r = `samples.r` are drawn per prompt at H =
               `horizon`, the verifier's way (learn/samples.py).
pi_theta starts from the base policy (`init = "base"`) or a fresh initialisation of the same
architecture (`"scratch"`).

The learner trains on all n' traces for up to `epochs` passes (at most `optim.steps` steps) and
keeps the weights with the lowest NLL on expert traces of `val_traces` other training prompts
(disjoint from the n and from the test set; used only to choose when to stop, and counted in
veriscale.json as `validation_traces`). Early stopping never acts inside the warm-up. Before and
after training it measures the expert NLL on `test_traces` expert traces of held-out test
prompts (`test_nll_before`, `test_nll_after`; search traces have no test set): the record that
the learner moved from its start. `train_layers` or LoRA (`lora_r`, merged before saving) keep
a large model affordable on a CPU.

Run: `veriscale train sft --base runs/base-high --out runs/sft`, or `--base smollm2 --task
gym:basic_arithmetic --config configs/llm/sft.toml`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from veriscale.config import knob, to_dict
from veriscale.learn.data import lm_rows
from veriscale.learn.loop import (BestCheckpoint, LogitsOf, OptimConfig, Snapshot, epoch_steps, eval_nll, jsonl_log,
                                  train_lm)
from veriscale.learn.samples import Samples, SamplesConfig, draw, horizon_of
from veriscale.tasks.base import NEVER, Rollouts, Task


@dataclass
class SFTConfig:
    n: int = knob(128, "n: training prompts (the VF data budget); those with an expert trace are trained on", min=1)
    expert: Literal["expert", "homogeneous", "search"] = knob(
        "expert", "expert traces: the task's expert (planted: the level's; text: gold solutions), the planted "
                  "homogeneous control, or search traces from checked base samples (text tasks)")
    init: Literal["base", "scratch"] = knob("base", "start from pi_b's weights or from a fresh initialisation")
    epochs: int = knob(40, "most passes over the traces (ours)", min=1)
    val_traces: int = knob(256, "expert traces on other training prompts, for early stopping only (ours)", min=1)
    test_traces: int = knob(256, "expert traces on test prompts, for the NLL before/after (ours)", min=1)
    patience: int = knob(5, "validation evaluations without improvement before stopping (0 = never; ours)", min=0)
    max_failures: int = knob(1, "search: most failed attempts kept before the success (ours)", min=0)
    bridge: str = knob("\nWait, that is wrong. Let me try again.\n", "search: text joining attempts (ours)")
    checks: int = knob(0, "search: most later successful attempts kept after the first success (ours)", min=0)
    check_bridge: str = knob("\nWait, let me check that again.\n", "search: text before each kept later "
                             "success (ours)")
    train_layers: int = knob(0, "train only the top k decoder blocks (0 = all; ours, for CPU)", min=0)
    lora_r: int = knob(0, "LoRA rank through peft (0 = full fine-tuning; transformers policies)", min=0)
    lora_alpha: int = knob(16, "LoRA alpha", min=1)
    lora_dropout: float = knob(0.0, "LoRA dropout", min=0.0, max=1.0)
    lora_targets: list[str] = knob(["q_proj", "k_proj", "v_proj", "o_proj"], "module names LoRA adapts")
    horizon: int = knob(0, "search: H of the base samples (0 = the tiny GPT's task horizon)", min=0)
    samples: SamplesConfig = knob(SamplesConfig(r=4), "search: the base samples drawn when none are given "
                                  "(learn/samples.py)")
    eval_batch: int = knob(256, "rows per forward pass of an NLL evaluation (memory: rows x length x vocab)", min=1)
    data_seed: int = knob(0, "seed of the training prompts and expert traces", min=0)
    threads: int = knob(0, "torch CPU threads (0 = torch's default)", min=0)
    optim: OptimConfig = knob(OptimConfig(steps=600, batch_size=32, lr=1e-3, warmup=10, weight_decay=0.0,
                                          eval_every=10), "optimizer (learn/loop.py); ours")


def search_trace(attempts: list[tuple[str, bool]], max_failures: int, bridge: str, checks: int = 0,
                 check_bridge: str = "") -> str | None:
    """The failed attempts before the first success (at most the last `max_failures` of them),
    then the success, joined by `bridge`, then the next `checks` successful attempts after it,
    each after `check_bridge`; None when no attempt succeeded."""
    first = next((i for i, (_, ok) in enumerate(attempts) if ok), None)
    if first is None:
        return None
    failures = [t for t, _ in attempts[:first]][max(0, first - max_failures):] if max_failures else []
    later = [t for t, ok in attempts[first + 1:] if ok][:checks]
    return "".join([bridge.join([*failures, attempts[first][0]]), *(check_bridge + t for t in later)])


def search_texts(policy, ro: Rollouts, T: torch.Tensor, r: int, cfg: SFTConfig) -> list[str | None]:
    """Per prompt, its search trace from r checked samples (rows i*r .. i*r+r-1), or None."""
    out = []
    for i in range(len(ro) // r):
        attempts = [(policy.decode(ro.tokens[k, :ro.counts[k]].tolist()), bool(T[k] < NEVER))
                    for k in range(i * r, i * r + r)]
        out.append(search_trace(attempts, cfg.max_failures, cfg.bridge, cfg.checks, cfg.check_bridge))
    return out


def expert_rollouts(policy, task: Task, prompts: Any, cfg: SFTConfig, seed: int, texts: list | None = None):
    """(prompts that have a trace, their expert traces as Rollouts). `texts` are given search
    traces; otherwise the task writes its expert's traces (token rollouts, or texts that the
    policy tokenises, EOS appended)."""
    traces = texts if texts is not None else task.expert_traces(prompts, seed, cfg.expert == "homogeneous")
    if isinstance(traces, Rollouts):
        return prompts, traces
    keep = [i for i, t in enumerate(traces) if t]
    ids = [policy.encode_completion(traces[i]) for i in keep]
    return [prompts[i] for i in keep], policy.rollouts(ids, max((len(x) for x in ids), default=1))


def train_sft(policy, task: Task, cfg: SFTConfig, out: str | Path, samples: Samples | None = None,
              meta: dict | None = None, texts: Callable[[str], list[str | None]] | None = None) -> Path:
    """Clone expert traces of the n training prompts into `policy` (trained in place); writes
    the run directory `out` and returns it. `texts(split)` ("train" | "val") gives the texts
    built from the samples of that split, one per prompt or None, in place of the search traces
    (learn/shape.py)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.init == "scratch":
        policy.reinitialise(cfg.optim.seed)
    search = cfg.expert == "search"
    if search and not policy.text:
        raise ValueError("expert=search joins text attempts, which needs a text policy; the planted task's "
                         "expert already writes search traces (task.expert_q)")
    if search and samples is None:  # Algorithm 1's steps 1-2, as the verifier draws them
        samples = draw(policy, task, cfg.samples, cfg.n, cfg.horizon or horizon_of(policy), cfg.data_seed,
                       cfg.data_seed)
    drawn = samples.prompts if search else task.prompts("train", cfg.n, cfg.data_seed)  # the samples' own prompts
    if search and texts is None:
        texts = lambda split: search_texts(policy, *((samples.rollouts, samples.T) if split == "train"  # noqa: E731
                                                      else (samples.val_rollouts, samples.val_T)), samples.r, cfg)
    train_texts = texts("train") if search else None
    prompts, traces = expert_rollouts(policy, task, drawn, cfg, cfg.data_seed, train_texts)
    if len(traces) < 1:
        raise ValueError(f"no expert traces among {len(drawn)} prompts (expert={cfg.expert})")
    # the cloned traces' first-success indices: the returns of the data VF clones, which the
    # study's prediction check sets beside the base's (diagnose.py)
    data_T = [t if t < NEVER else None for t in task.check(prompts, traces).tolist()]
    data = lm_rows(policy.encode_prompts(prompts), traces, policy.pad_id)
    if search:
        val_p, val_t = expert_rollouts(policy, task, samples.val_prompts, cfg, 0, texts("val"))
    else:
        val_p, val_t = expert_rollouts(policy, task, task.validation_prompts(drawn, cfg.val_traces,
                                                                             cfg.data_seed + 7919),
                                       cfg, cfg.data_seed + 1)
    if len(val_t) < 1:
        raise ValueError("no expert traces among the validation prompts (search: no validation sample succeeded; "
                         "raise samples.val_prompts or samples.r)")
    val = lm_rows(policy.encode_prompts(val_p), val_t, policy.pad_id)
    test = None
    if not search:
        test_p, test_t = expert_rollouts(policy, task, task.prompts("test", cfg.test_traces, 0), cfg, 12345)
        test = lm_rows(policy.encode_prompts(test_p), test_t, policy.pad_id)
    if cfg.lora_r:
        if cfg.train_layers:
            warnings.warn(f"train_layers = {cfg.train_layers} is not used with lora_r = {cfg.lora_r}: LoRA adapts "
                          f"every block (lora_r = 0 trains the top blocks)", stacklevel=2)
        policy.add_lora(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    else:
        policy.train_top(cfg.train_layers)
    net = LogitsOf(policy, policy.top_blocks())
    # With a frozen trunk its features are computed once for every row (N, S, d): each epoch
    # then runs only the top blocks.
    data, val, test = (None if d is None else (net.inputs(d[0], cfg.eval_batch), *d[1:]) for d in (data, val, test))
    optim = replace(cfg.optim, steps=epoch_steps(cfg.optim.steps, cfg.epochs, len(traces), cfg.optim.batch_size))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    nll = lambda d: None if d is None else eval_nll(net, *d, batch_size=cfg.eval_batch)  # noqa: E731
    test_before = nll(test)
    snapshot = Snapshot(net)
    best = BestCheckpoint("val_nll", cfg.patience, snapshot.take, min_step=optim.warmup)
    init = {"step": -1, "val_nll": nll(val), "test_nll": test_before}  # step -1: the initial policy
    try:
        with jsonl_log(out / "metrics.jsonl") as log:
            log(init)
            best.update(init)
            train_lm(net, *data, optim, evaluate=lambda: {"val_nll": nll(val)}, log=log, desc="sft",
                     stop=best.update)
    finally:  # also after a NaN/inf stop: the best weights so far are what the directory keeps
        snapshot.restore()
        net.eval()
        policy.save(out, {"base": policy.spec, **(meta or {}), "stage": "sft", "run": to_dict(cfg), "task": to_dict(task.cfg), "task_spec": task.name,
                          "best_step": best.best_step, "steps_planned": optim.steps, "training_prompts": cfg.n,
                          "training_traces": len(traces), "validation_traces": len(val_t), "data_T": data_T,
                          # search traces come from checked base samples: every one is a label
                          "labelled_traces": len(samples.T) + len(samples.val_T) if search else 0,
                          "val_nll_before": init["val_nll"],
                          "val_nll_after": best.best, "test_nll_before": test_before, "test_nll_after": nll(test)})
    return out
