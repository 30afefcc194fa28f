"""Verifier-based (VB) policy improvement by RL: REINFORCE with a group-mean baseline, KL to the
base policy, token-level normalisation.

Each step takes B = `prompts_per_step` of the n training prompts (shuffled epochs: the run makes
`epochs` passes over its n prompts, at most `steps` steps, so more n is more distinct prompts)
and samples G traces tau_ij ~ pi_theta(.|x_i) of up to H = task horizon tokens with the KV-cache
engine. Reward, in [0, 1]:
  outcome    R_ij = 1{T_ij <= H}, the paper's 0/1 outcome reward (success within the budget), T
             from the task's checker;
  return     R_ij = R_H(tau_ij) / H = (H - T_ij + 1) * 1{T_ij <= H} / H, the normalised bi-level
             return (shaped: earlier success is worth more; ours, not the paper's RL reward);
  verifier   R_ij = sum_{h=1..H} r_hat(x_i, tau_ij,<=h) / H, the return the learned verifier
             predicts (Algorithm 1's policy-improvement step; past a trace's end the score of its
             last prefix repeats).
Data accounting: every sampled trace is one reward query (checker or verifier); the run's
config.json states prompts, steps and reward queries.
Advantage A_ij = R_ij - (1/G) sum_l R_il (group-mean baseline; no std scaling, ours). Loss:
  L(theta) = 1/(sum_ij |tau_ij|) * sum_ij sum_{t <= |tau_ij|} [ -A_ij log pi_theta^temp(tau_ij,t | s_ijt)
                                                             + beta KL(pi_theta(.|s_ijt) || pi_b(.|s_ijt)) ]
with s_ijt = (x_i, tau_ij,<t). One on-policy AdamW step per batch, so the importance ratio is 1
and the first term's gradient is REINFORCE; pi_theta^temp is the sampling distribution
(logits / temperature). The KL term is the exact per-state KL over the vocabulary (temperature
1) at the visited states. Groups whose G rewards are all equal have zero advantage and give no
policy gradient; their share is logged each step with reward, true return, KL and entropy.

Run: `veriscale train rl --base runs/base-high --out runs/rl [--set reward=verifier --verifier runs/verifier]`.
Writes model.safetensors, config.json (policy "gpt", stage "rl") and metrics.jsonl to `out`; a
checkpoint is saved at the start and every `save_every` steps, so a NaN/inf stop keeps the last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from veriscale import progress
from veriscale.config import knob, to_dict
from veriscale.learn.loop import check_finite, epoch_steps, jsonl_log, lm_batch, make_optimizer, minibatches
from veriscale.learn.verifier import Verifier, load_verifier
from veriscale.policy import checkpoint
from veriscale.policy.engine import generate
from veriscale.policy.sampler import load_gpt_policy
from veriscale.rewards import returns
from veriscale.tasks.base import Rollouts
from veriscale.tasks.planted import PlantedTask


@dataclass
class RLConfig:
    n: int = knob(128, "n: training prompts, the VB data budget (the verifier's prompts by default)", min=1)
    prompts_per_step: int = knob(8, "prompts per step B (ours)", min=1)
    G: int = knob(8, "samples per prompt (group size; ours)", min=2)
    epochs: int = knob(4, "passes over the n prompts (ours)", min=1)
    steps: int = knob(60, "most policy-gradient steps (caps epochs x n / B; ours)", min=1)
    lr: float = knob(3e-4, "AdamW learning rate, constant (ours)", min=0.0)
    beta: float = knob(0.02, "weight of the KL penalty to pi_b (ours)", min=0.0)
    reward: Literal["outcome", "return", "verifier"] = knob(
        "outcome", "outcome: 0/1 success within H (the paper's); return: the shaped bi-level return R_H/H; "
                   "verifier: the learned verifier's predicted return")
    temperature: float = knob(1.0, "sampling temperature (the policy gradient uses the same)", min=0.01)
    weight_decay: float = knob(0.0, "AdamW weight decay", min=0.0)
    grad_clip: float = knob(1.0, "gradient-norm clip (0 = off)", min=0.0)
    save_every: int = knob(10, "steps between checkpoints", min=1)
    seed: int = knob(0, "seed of sampling and prompt order", min=0)
    data_seed: int = knob(0, "seed of the training prompts (the same n prompts as SFT/verifier by default)", min=0)
    threads: int = knob(0, "torch CPU threads (0 = torch's default)", min=0)

    @property
    def total_steps(self) -> int:
        return epoch_steps(self.steps, self.epochs, self.n, self.prompts_per_step)


def rl_loss(logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
            adv: torch.Tensor, beta: float, temperature: float = 1.0) -> tuple[torch.Tensor, dict]:
    """The loss of the module docstring on one batch.

    logits, ref_logits (N, S, V) of pi_theta and pi_b; targets, mask (N, S) sampled tokens and
    where they are; adv (N,) advantages. Returns the loss and per-token mean KL and entropy.
    """
    logp = F.log_softmax(logits.float(), -1)  # (N, S, V), temperature 1: KL and entropy
    ref_logp = F.log_softmax(ref_logits.float(), -1)
    logp_temp = logp if temperature == 1.0 else F.log_softmax(logits.float() / temperature, -1)
    tok_logp = logp_temp.gather(-1, targets[..., None]).squeeze(-1)  # (N, S)
    kl = (logp.exp() * (logp - ref_logp)).sum(-1)  # (N, S) exact KL(pi_theta || pi_b) per state
    m = mask.float()
    denom = m.sum().clamp(min=1.0)
    loss = ((-adv[:, None] * tok_logp + beta * kl) * m).sum() / denom
    entropy = (-(logp.exp() * logp).sum(-1) * m).sum() / denom
    return loss, {"kl": ((kl * m).sum() / denom).item(), "entropy": entropy.item()}


def zero_variance_share(rewards: torch.Tensor) -> float:
    """Share of groups (rows of a (B, G) reward tensor) whose G rewards are all equal."""
    return (rewards == rewards[:, :1]).all(1).double().mean().item()


def group_advantages(rewards: torch.Tensor, scale: bool = False) -> torch.Tensor:
    """(B, G) rewards -> (B*G,) advantages R - group mean; with `scale`, divided by the group's
    standard deviation + 1e-4 (GRPO's normalisation; a zero-variance group stays at 0)."""
    adv = rewards - rewards.mean(1, keepdim=True)
    if scale:
        adv = adv / (rewards.std(1, unbiased=False, keepdim=True) + 1e-4)
    return adv.flatten()


def trace_rewards(task: PlantedTask, prompts: torch.Tensor, ro: Rollouts, verifier: Verifier | None,
                  reward: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(reward optimised, true normalised return R_H/H), each (N,), for N rollouts of width H."""
    H = ro.tokens.shape[1]
    T = task.check(prompts, ro)
    true = (returns(T, H) / H).float()
    if reward == "verifier":
        return verifier.score(prompts, ro).sum(1) / H, true
    return ((T <= H).float() if reward == "outcome" else true), true


def train_rl(base_dir: str | Path, cfg: RLConfig, out: str | Path, verifier_dir: str | Path | None = None) -> Path:
    """Improve pi_b by the policy gradient of the module docstring; writes `out`, returns it."""
    if cfg.reward == "verifier" and verifier_dir is None:
        raise ValueError("reward=verifier needs a verifier run directory")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    policy, task, _ = load_gpt_policy(base_dir)
    ref, _, _ = load_gpt_policy(base_dir)
    ref.requires_grad_(False)
    verifier = load_verifier(verifier_dir, task) if cfg.reward == "verifier" else None
    steps = cfg.total_steps
    H = task.cfg.horizon
    prompts = task.prompts("train", cfg.n, cfg.data_seed)
    g_data = torch.Generator().manual_seed(cfg.seed)
    g_sample = torch.Generator().manual_seed(cfg.seed + 1)
    batches = minibatches(cfg.n, cfg.prompts_per_step, g_data)
    opt = make_optimizer(policy, cfg.lr, cfg.weight_decay)
    out = Path(out)
    run_cfg = {"policy": "gpt", "stage": "rl", "model": to_dict(policy.cfg), "task": to_dict(task.cfg),
               "run": to_dict(cfg), "base": str(base_dir), "verifier": None if verifier_dir is None else str(verifier_dir),
               "steps_planned": steps, "training_prompts": cfg.n,
               "reward_queries": steps * cfg.prompts_per_step * cfg.G}
    checkpoint.save(out, policy, {**run_cfg, "step": 0})
    with jsonl_log(out / "metrics.jsonl") as log:
        bar = progress.bar(range(steps), desc=f"rl-{cfg.reward}")
        for step in bar:
            t0 = time.perf_counter()
            x = prompts[next(batches)].repeat_interleave(cfg.G, 0)  # (B*G, k), G copies of each prompt
            prompt_ids = task.encode(x)
            policy.eval()
            ro = generate(policy, prompt_ids, H, eos_id=task.eos, pad_id=task.pad,
                          temperature=cfg.temperature, generator=g_sample)
            t_sample = time.perf_counter() - t0
            reward, true = trace_rewards(task, x, ro, verifier, cfg.reward)
            R = reward.view(-1, cfg.G)  # (B, G)
            w = int(ro.counts.max())  # columns past the longest trace are padding in every row
            inputs, targets, mask = lm_batch(prompt_ids, Rollouts(ro.tokens[:, :w], ro.mask[:, :w], ro.counts))
            policy.train()
            with torch.no_grad():
                ref_logits = ref(inputs)
            loss, stats = rl_loss(policy(inputs), ref_logits, targets, mask, group_advantages(R), cfg.beta,
                                  cfg.temperature)
            check_finite(loss, "rl", step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
            opt.step()
            rec = {"step": step, "loss": loss.item(), "reward": reward.mean().item(), "return": true.mean().item(),
                   **stats, "zero_variance_share": zero_variance_share(R), "tokens": int(mask.sum()),
                   "time_sample": t_sample, "time_step": time.perf_counter() - t0}
            log(rec)
            bar.set_postfix(reward=f"{rec['reward']:.3f}", kl=f"{rec['kl']:.4f}")
            if (step + 1) % cfg.save_every == 0 or step + 1 == steps:
                checkpoint.save(out, policy, {**run_cfg, "step": step + 1})
    return out
