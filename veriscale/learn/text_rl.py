"""Verifier-based (VB) RL on a transformers causal LM: GRPO-style policy gradient with the
checker's 0/1 outcome reward and a KL penalty to the base policy.

Each step takes B = `prompts_per_step` of the n training prompts (shuffled epochs) and samples G
traces tau_ij ~ pi_theta(.|x_i) of at most H tokens. Reward R_ij = 1{T_ij <= H} from the task's
checker (the same checker that scores every evaluation). Advantage
    A_ij = (R_ij - mean_l R_il) / (std_l R_il + 1e-4)      (adv_norm = "std", GRPO)
    A_ij =  R_ij - mean_l R_il                             (adv_norm = "none")
and the loss is the didactic track's (`learn/rl.py: rl_loss`, reused):
    L(theta) = 1/(sum_ij |tau_ij|) sum_ij sum_{t <= |tau_ij|} [ -A_ij log pi_theta^temp(tau_ij,t | s_ijt)
                                                              + beta KL(pi_theta(.|s_ijt) || pi_b(.|s_ijt)) ]
with the exact per-state KL over the vocabulary, one on-policy AdamW step per batch (importance
ratio 1, so no clipping is needed: GRPO's clipped ratio reduces to this on-policy), gradients
accumulated over micro-batches of `micro_batch` traces with each micro-batch's loss weighted by
its share of the batch's tokens, so the sum is exactly the token-normalised loss above.

Why our own loop and not TRL's GRPOTrainer: the project's RL loss, advantages, zero-variance
accounting and records are shared with the didactic track, and sampling goes through our
samplers (the transformers engine with KV-cache compaction, or vLLM), which GRPOTrainer would
replace with its own generation path.

The run directory is a transformers directory (safetensors) with `veriscale.json`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from veriscale import progress
from veriscale.config import knob, to_dict
from veriscale.learn.loop import check_finite, jsonl_log, make_optimizer, minibatches
from veriscale.learn.rl import group_advantages, rl_loss, zero_variance_share
from veriscale.learn.text_lm import LogitsOf, completion_batch, freeze_below, pack, save_text_run


@dataclass
class TextRLConfig:
    n: int = knob(64, "n: training prompts, the VB data budget (the same prompts as SFT and the verifier)", min=1)
    prompts_per_step: int = knob(4, "prompts per step B (ours)", min=1)
    G: int = knob(4, "samples per prompt (group size; ours)", min=2)
    steps: int = knob(8, "policy-gradient steps (ours: small, for CPU)", min=1)
    lr: float = knob(1e-5, "AdamW learning rate, constant (ours)", min=0.0)
    beta: float = knob(0.04, "weight of the KL penalty to pi_b", min=0.0)
    adv_norm: Literal["std", "none"] = knob("std", "std: GRPO's per-group normalisation; none: R - group mean")
    temperature: float = knob(1.0, "sampling temperature (the policy gradient uses the same)", min=0.01)
    micro_batch: int = knob(4, "traces per forward/backward (memory: logits are traces x length x vocab)", min=1)
    grad_clip: float = knob(1.0, "gradient-norm clip (0 = off)", min=0.0)
    train_layers: int = knob(0, "train only the top k decoder blocks (0 = all; ours, for CPU)", min=0)
    seed: int = knob(0, "seed of sampling and prompt order", min=0)
    data_seed: int = knob(0, "seed of the training prompts", min=0)
    threads: int = knob(0, "torch CPU threads (0 = torch's default)", min=0)


def accumulate_gradient(net, ref_net, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                        adv: torch.Tensor, cfg: TextRLConfig, step: int = 0) -> dict:
    """Backpropagate the token-normalised loss of the module docstring over micro-batches.

    inputs/targets/mask (N, S), adv (N,). Each micro-batch's loss (normalised over its own tokens)
    is weighted by its share of all N traces' tokens, so the accumulated gradient is exactly the
    full batch's. Returns the loss, mean KL and entropy per token and the token count."""
    total = mask.sum().clamp(min=1)
    out = {"loss": 0.0, "kl": 0.0, "entropy": 0.0, "tokens": int(mask.sum())}
    for i in range(0, len(inputs), cfg.micro_batch):
        mb = slice(i, i + cfg.micro_batch)
        share = (mask[mb].sum() / total).item()
        with torch.no_grad():
            ref_logits = ref_net(inputs[mb])
        loss, stats = rl_loss(net(inputs[mb]), ref_logits, targets[mb], mask[mb], adv[mb], cfg.beta, cfg.temperature)
        check_finite(loss, "rl", step)
        (loss * share).backward()
        out["loss"] += loss.item() * share
        out["kl"] += stats["kl"] * share
        out["entropy"] += stats["entropy"] * share
    return out


def train_text_rl(sampler, task, cfg: TextRLConfig, H: int, out: str | Path, *, meta: dict | None = None) -> Path:
    """Improve `sampler.model` (trained in place) by the policy gradient of the module docstring
    with traces of at most H tokens; writes the run directory `out` and returns it."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    policy = sampler.model
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    freeze_below(policy, cfg.train_layers)
    net, ref_net = LogitsOf(policy), LogitsOf(ref)
    prompts = task.prompts("train", cfg.n, cfg.data_seed)
    batches = minibatches(cfg.n, cfg.prompts_per_step, torch.Generator().manual_seed(cfg.seed))
    opt = make_optimizer(policy, cfg.lr, 0.0)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with jsonl_log(out / "metrics.jsonl") as log:
        bar = progress.bar(range(cfg.steps), desc="rl")
        for step in bar:
            t0 = time.perf_counter()
            x = [prompts[int(i)] for i in next(batches) for _ in range(cfg.G)]  # G copies of each prompt
            policy.eval()
            ro = sampler.sample(x, H, temperature=cfg.temperature, seed=cfg.seed * 1_000_003 + step)
            t_sample = time.perf_counter() - t0
            R = (task.check(x, ro) <= H).float().view(-1, cfg.G)  # (B, G) 0/1 outcome reward
            adv = group_advantages(R, scale=cfg.adv_norm == "std")  # (B*G,)
            inputs, targets, mask = completion_batch(*pack([sampler.encode(p) for p in x],
                                                           [ro.tokens[k, :ro.counts[k]].tolist() for k in range(len(x))],
                                                           sampler.pad_id))
            policy.train()
            opt.zero_grad(set_to_none=True)
            stats = accumulate_gradient(net, ref_net, inputs, targets, mask, adv, cfg, step)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad], cfg.grad_clip)
            opt.step()
            rec = {"step": step, **stats, "reward": R.mean().item(), "zero_variance_share": zero_variance_share(R),
                   "time_sample": t_sample, "time_step": time.perf_counter() - t0}
            log(rec)
            bar.set_postfix(reward=f"{rec['reward']:.3f}", kl=f"{rec['kl']:.4f}")
    policy.eval()
    return save_text_run(out, policy, sampler.tok, {**(meta or {}), "stage": "rl", "run": to_dict(cfg), "horizon": H})
