"""Verifier-based (VB) policy improvement by RL, for any policy (policy/base.py) and task:
REINFORCE with a group-mean baseline (GRPO-style), KL to the base policy, token-level
normalisation.

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
Data accounting: every sampled trace is one reward query (checker or verifier); with the
outcome and return rewards each is a ground-truth label, and `label_budget` caps them: a step
that would exceed it takes only the prompts whose G traces still fit (at least one), and the run
stops once fewer than G labels are left (`stopped: "labels"`). The study passes the labels the
verifier of the same n used (`samples.verifier_labels`: n x r training samples plus the
validation ones), so RL and the verifier see equally many; 0 is unlimited (the `rl_outcome_unlimited`
method). The verifier reward queries no ground truth (the checker's true return is only logged),
so the budget never binds it. The run's veriscale.json states prompts, steps, the reward queries
spent and the ground-truth labels among them (`label_queries`). Training runs `steps` steps, or
stops earlier when the labels are spent or at a plateau of the training reward (`plateau` = W >
0): after every W steps from 2W on, when the mean reward of the last W steps is at most that of
the W steps before plus `plateau_tol`; veriscale.json says which (`stopped`).
Advantage A_ij = R_ij - (1/G) sum_l R_il (`adv_norm = "none"`, the default, ours) or that divided
by the group's standard deviation + 1e-4 (`"std"`, GRPO's). Loss:
  L(theta) = 1/(sum_ij |tau_ij|) * sum_ij sum_{t <= |tau_ij|} [ -A_ij log pi_theta^temp(tau_ij,t | s_ijt)
                                                             + beta KL(pi_theta(.|s_ijt) || pi_b(.|s_ijt)) ]
with s_ijt = (x_i, tau_ij,<t). One on-policy AdamW step per batch, so the importance ratio is 1
(GRPO's clipped ratio reduces to this on-policy) and the first term's gradient is REINFORCE;
gradients accumulate over micro-batches of `micro_batch` traces, each weighted by its share of
the batch's tokens, so the sum is exactly the token-normalised loss; pi_theta^temp is the sampling distribution
(logits / temperature). The KL term is the exact per-state KL over the vocabulary at the visited
states, between pi_theta and pi_b both at `kl_temperature` (logits / kl_temperature): 1 (ours,
the default) penalises the distance between the models themselves; set it to `temperature` for
TRL GRPOTrainer's choice (its reference log-probabilities are taken at the sampling temperature). Groups whose G rewards are all equal have zero advantage and give no
policy gradient; their share is logged each step with reward, true return, KL and entropy.

With `train_layers` = k the lower blocks never train, and the policy and its reference share
them: each micro-batch runs them once (no autograd) and only the top k blocks run twice (policy
with gradients, reference without); `policy.top_blocks()`.

Why our own loop and not TRL's GRPOTrainer: the loss, advantages, zero-variance accounting and
records are the same for the tiny GPT and a transformers model, and sampling goes through the
policy's own sampler (the KV-cache engines, or vLLM), which GRPOTrainer would replace.

Run: `veriscale train rl --base runs/base-high --out runs/rl [--set reward=verifier --verifier runs/verifier]`,
or `--base smollm2 --task gym:basic_arithmetic --config configs/llm/rl.toml`. Writes the run
directory (stage "rl") and metrics.jsonl; the policy is saved every `save_every` steps and at the
end, so a NaN/inf stop keeps the last save.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from veriscale import progress
from veriscale.config import ConfigError, knob, to_dict
from veriscale.learn.data import lm_rows
from veriscale.learn.loop import LogitsOf, check_finite, epoch_steps, jsonl_log, make_optimizer, minibatches
from veriscale.learn.samples import horizon_of
from veriscale.learn.verifier import Verifier
from veriscale.rewards import returns
from veriscale.tasks.base import Rollouts, Task, repeat_each, take


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
    adv_norm: Literal["none", "std"] = knob("none", "none: R - group mean (ours); std: also / group sd (GRPO)")
    temperature: float = knob(1.0, "sampling temperature (the policy gradient uses the same)", min=0.01)
    kl_temperature: float = knob(1.0, "temperature of both distributions in the KL term (1 = the models "
                                      "themselves, ours; TRL uses the sampling temperature)", min=0.01)
    horizon: int = knob(0, "H of the sampled traces (0 = the tiny GPT's task horizon; text tasks need it)", min=0)
    micro_batch: int = knob(0, "traces per forward/backward (0 = the whole batch; memory: traces x length x vocab)",
                            min=0)
    head_budget: int = knob(2 ** 26, "most logits (sampled states x vocabulary) the output head and loss hold at "
                                     "once: a micro-batch with more runs them in checkpointed chunks of "
                                     "head_budget // vocabulary states (0 = no limit; ours: 2^26, 256 MB in float32)",
                            min=0)
    train_layers: int = knob(0, "train only the top k decoder blocks (0 = all; ours, for CPU)", min=0)
    weight_decay: float = knob(0.0, "AdamW weight decay", min=0.0)
    grad_clip: float = knob(1.0, "gradient-norm clip (0 = off)", min=0.0)
    plateau: int = knob(0, "stop when the mean training reward of the last `plateau` steps is not above that "
                           "of the `plateau` steps before by more than plateau_tol (0 = run every step; ours)", min=0)
    plateau_tol: float = knob(0.0, "smallest rise of the windowed mean reward that counts as still improving",
                              min=0.0)
    label_budget: int = knob(0, "most ground-truth reward queries (traces the checker labels for the outcome or "
                                "return reward); the run stops when they are spent (0 = unlimited; a study passes "
                                "the labels of its verifier at the same n)", min=0)
    save_every: int = knob(10, "steps between saves of the policy", min=1)
    seed: int = knob(0, "seed of sampling and prompt order", min=0)
    data_seed: int = knob(0, "seed of the training prompts (the same n prompts as SFT/verifier by default)", min=0)
    threads: int = knob(0, "torch CPU threads (0 = torch's default)", min=0)

    def __post_init__(self) -> None:
        if 0 < self.label_budget < self.G:
            raise ConfigError(f"label_budget: {self.label_budget} labels cannot pay for one group of G={self.G} traces")

    @property
    def budgeted(self) -> bool:
        """Whether this run's rewards are ground-truth labels under a budget."""
        return self.label_budget > 0 and self.reward != "verifier"

    @property
    def total_steps(self) -> int:
        return epoch_steps(self.steps, self.epochs, self.n, self.prompts_per_step)


def rl_loss(logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor, adv: torch.Tensor, beta: float,
            temperature: float = 1.0, kl_temperature: float = 1.0) -> tuple[torch.Tensor, dict]:
    """The loss of the module docstring, averaged over M sampled tokens.

    logits, ref_logits (M, V) of pi_theta and pi_b at the states where the tokens were sampled;
    targets (M,) the sampled tokens; adv (M,) each token's trace advantage. Returns the loss and
    the per-token mean KL and entropy (both at kl_temperature).
    """
    z = logits.float()
    logp = F.log_softmax(z / kl_temperature, -1)  # (M, V): the KL term and the entropy
    ref_logp = F.log_softmax(ref_logits.float() / kl_temperature, -1)
    if temperature == kl_temperature:
        tok_logp = logp.gather(-1, targets[:, None]).squeeze(-1)  # (M,)
    else:  # log softmax(z / T) at the sampled token, without a second (M, V) table
        tok_logp = z.gather(-1, targets[:, None]).squeeze(-1) / temperature - torch.logsumexp(z / temperature, -1)
    p = logp.exp()
    kl = (p * (logp - ref_logp)).sum(-1)  # (M,) exact KL(pi_theta || pi_b) per state
    loss = (-adv * tok_logp + beta * kl).mean()
    entropy = -(p * logp).sum(-1).mean()
    return loss, {"kl": kl.mean().item(), "entropy": entropy.item()}


def chunked_rl_loss(net: LogitsOf, ref_net: LogitsOf, h: torch.Tensor, ref_h: torch.Tensor, targets: torch.Tensor,
                    adv: torch.Tensor, cfg: RLConfig) -> tuple[torch.Tensor, dict]:
    """`rl_loss` over M sampled states from their final hidden states h, ref_h (M, d), the output
    heads and the loss run on a chunk of states at a time under activation checkpointing:
    a chunk's (chunk, V) logits are freed after its forward and recomputed in backward, so memory
    holds one chunk x V table, not M x V (chunk = head_budget // V; no chunks while M x V fits).
    The loss is the same mean (each chunk's mean weighted by its share of the M states), its
    gradient equal up to float summation order."""
    M = len(h)
    with torch.no_grad():
        V = net.policy.head(h[:1]).shape[-1]
    size = max(1, cfg.head_budget // V) if cfg.head_budget else M
    if size >= M:
        with torch.no_grad():
            ref_logits = ref_net.policy.head(ref_h)
        return rl_loss(net.policy.head(h), ref_logits, targets, adv, cfg.beta, cfg.temperature, cfg.kl_temperature)

    def chunk(hc: torch.Tensor, ref_hc: torch.Tensor, tc: torch.Tensor, ac: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            ref_logits = ref_net.policy.head(ref_hc)
        loss, stats = rl_loss(net.policy.head(hc), ref_logits, tc, ac, cfg.beta, cfg.temperature, cfg.kl_temperature)
        return loss, torch.tensor(stats["kl"]), torch.tensor(stats["entropy"])

    total, kl, entropy = 0.0, 0.0, 0.0
    for i in range(0, M, size):
        part = slice(i, i + size)
        share = len(h[part]) / M
        loss, k, e = checkpoint(chunk, h[part], ref_h[part], targets[part], adv[part], use_reentrant=False)
        total, kl, entropy = total + share * loss, kl + share * float(k), entropy + share * float(e)
    return total, {"kl": kl, "entropy": entropy}


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


def accumulate_gradient(net: LogitsOf, ref_net: LogitsOf, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                        adv: torch.Tensor, cfg: RLConfig, step: int = 0, features: torch.Tensor | None = None) -> dict:
    """Backpropagate the token-normalised loss of the module docstring over micro-batches.

    inputs/targets/mask (N, S), adv (N,); `features` (N, S, d), the frozen trunk's hidden states
    of `inputs` when the sampler kept them (else the trunk runs here). Each micro-batch's loss
    (normalised over its own tokens) is weighted by its share of all N traces' tokens, so the
    accumulated gradient is exactly the full batch's (one micro-batch of all N when
    cfg.micro_batch is 0). Returns the loss, mean KL and entropy per token and the token count."""
    total = mask.sum().clamp(min=1)
    out = {"loss": 0.0, "kl": 0.0, "entropy": 0.0, "tokens": int(mask.sum())}
    size = cfg.micro_batch or len(inputs)
    for i in range(0, len(inputs), size):
        mb = slice(i, i + size)
        m = mask[mb]  # (b, S): the sampled tokens; logits are computed there only (not prompt, not padding)
        if not m.any():
            continue
        share = (m.sum() / total).item()
        # the ids, or the frozen trunk's features (N, S, d) that both networks read
        x = features[mb] if features is not None else net.inputs(inputs[mb], size)
        with torch.no_grad():
            ref_h = ref_net.hidden_at(x, m)  # (M, d)
        tok_adv = adv[mb, None].expand_as(m)[m]  # (M,)
        loss, stats = chunked_rl_loss(net, ref_net, net.hidden_at(x, m), ref_h, targets[mb][m], tok_adv, cfg)
        check_finite(loss, "rl", step)
        (loss * share).backward()
        out["loss"] += loss.item() * share
        out["kl"] += stats["kl"] * share
        out["entropy"] += stats["entropy"] * share
    return out


def plateaued(rewards: list[float], window: int, tol: float) -> bool:
    """Whether the training reward stopped rising: at a multiple of `window` steps, from
    2 x window on, the mean of the last window is at most the mean of the one before + tol."""
    k = len(rewards)
    if window <= 0 or k < 2 * window or k % window:
        return False
    last, before = rewards[k - window:], rewards[k - 2 * window:k - window]
    return sum(last) / window <= sum(before) / window + tol


def padded(rows: list[torch.Tensor] | None, width: int) -> torch.Tensor | None:
    """Per-row (len_i, d) features, zero-padded on the right to (N, width, d), the layout of
    `lm_rows` inputs (each row's prompt from column 0, its trace right after); None stays None."""
    if rows is None:
        return None
    out = rows[0].new_zeros(len(rows), width, rows[0].shape[1])
    for i, f in enumerate(rows):
        out[i, :len(f)] = f
    return out


def trace_rewards(task: Task, prompts: Any, ro: Rollouts, verifier: Verifier | None,
                  reward: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(reward optimised, true normalised return R_H/H), each (N,), for N rollouts of width H."""
    H = ro.tokens.shape[1]
    T = task.check(prompts, ro)
    true = (returns(T, H) / H).float()
    if reward == "verifier":
        return verifier.score(prompts, ro).sum(1) / H, true
    return ((T <= H).float() if reward == "outcome" else true), true


def train_rl(policy, task: Task, cfg: RLConfig, out: str | Path, verifier: Verifier | None = None,
             meta: dict | None = None) -> Path:
    """Improve `policy` (trained in place) by the policy gradient of the module docstring;
    writes the run directory `out` and returns it."""
    if cfg.reward == "verifier" and verifier is None:
        raise ValueError("reward=verifier needs a verifier")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ref = policy.frozen_copy()
    policy.train_top(cfg.train_layers)
    top = policy.top_blocks()
    net, ref_net = LogitsOf(policy, top), LogitsOf(ref, None if top is None else ref.top_blocks(top.frozen))
    steps, H = cfg.total_steps, cfg.horizon or horizon_of(policy)
    prompts = task.prompts("train", cfg.n, cfg.data_seed)
    g_sample = torch.Generator().manual_seed(cfg.seed + 1)
    batches = minibatches(cfg.n, cfg.prompts_per_step, torch.Generator().manual_seed(cfg.seed))
    opt = make_optimizer(net, cfg.lr, cfg.weight_decay)
    trainable = [p for p in net.parameters() if p.requires_grad]
    run = {"base": policy.spec, "verifier": None if verifier is None else verifier.policy.spec, **(meta or {}),
           "stage": "rl", "run": to_dict(cfg), "task": to_dict(task.cfg), "task_spec": task.name, "horizon": H,
           "steps_planned": steps, "training_prompts": cfg.n, "reward_queries": 0, "label_queries": 0,
           "label_budget": cfg.label_budget, "stopped": "steps"}
    out = Path(out)
    policy.save(out, {**run, "step": 0})
    rewards: list[float] = []
    with jsonl_log(out / "metrics.jsonl") as log:
        bar = progress.bar(range(steps), desc=f"rl-{cfg.reward}")
        for step in bar:
            t0 = time.perf_counter()
            idx = next(batches)
            if cfg.budgeted:  # the prompts whose G labelled traces the budget still pays for (>= 1)
                idx = idx[:(cfg.label_budget - run["label_queries"]) // cfg.G]
            chosen = take(prompts, idx)
            x = repeat_each(chosen, cfg.G)  # G copies of each prompt
            ro = policy.sample(x, H, temperature=cfg.temperature, generator=g_sample, capture=top.frozen if top else 0)
            t_sample = time.perf_counter() - t0
            reward, true = trace_rewards(task, x, ro, verifier, cfg.reward)
            R = reward.view(-1, cfg.G)  # (B, G)
            w = int(ro.counts.max())  # columns past the longest trace are padding in every row
            inputs, targets, mask = lm_rows(policy.encode_prompts(x),
                                            Rollouts(ro.tokens[:, :w], ro.mask[:, :w], ro.counts), policy.pad_id)
            net.train()
            opt.zero_grad(set_to_none=True)
            stats = accumulate_gradient(net, ref_net, inputs, targets, mask,
                                        group_advantages(R, scale=cfg.adv_norm == "std"), cfg, step,
                                        features=padded(ro.features, inputs.shape[1]))
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            opt.step()
            rec = {"step": step, **stats, "reward": reward.mean().item(), "return": true.mean().item(),
                   "zero_variance_share": zero_variance_share(R), "time_sample": t_sample,
                   "time_step": time.perf_counter() - t0}
            log(rec)
            rewards.append(rec["reward"])
            bar.set_postfix(reward=f"{rec['reward']:.3f}", kl=f"{rec['kl']:.4f}")
            run["reward_queries"] += len(ro)
            run["label_queries"] += 0 if cfg.reward == "verifier" else len(ro)
            spent = cfg.budgeted and cfg.label_budget - run["label_queries"] < cfg.G
            stop = plateaued(rewards, cfg.plateau, cfg.plateau_tol) or spent
            if stop:
                run["stopped"] = "labels" if spent else "plateau"
            if (step + 1) % cfg.save_every == 0 or step + 1 == steps or stop:
                net.eval()
                policy.save(out, {**run, "step": step + 1})
            if stop:
                break
    return out
