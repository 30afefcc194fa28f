"""The learned verifier of the verifier-based (VB) methods: SPEC §1 Algorithms 1 and 2.

Algorithm 1 (simple verifier-based algorithm), steps 1-3 here, step 4 in `search.py` (best-of-N)
and `learn/rl.py` (RL against the verifier):
  1. sample r rollouts tau ~ pi_b(.|x) of H = task horizon tokens on each of n training prompts;
  2. label every prefix with the bi-level reward y_h = 1{h >= T(tau)}, h = 1..|tau|, from the
     task's checker;
  3. fit r_hat(x, tau_<=h) = sigmoid(w . z_h + b), where z_h is the hidden state of a GPT body
     (initialised from pi_b) after reading BOS x SEP tau_1..tau_h, by
        log loss      min  -mean_{i,h} [ y log r_hat + (1 - y) log(1 - r_hat) ]   (default)
        squared loss  min   mean_{i,h} (r_hat - y)^2
     averaged over all labelled prefixes of all training rollouts (token-level normalisation).
Algorithm 2 (`loss = "zero_one"`) is the same with the verifier used as a classifier: it is
trained with the log-loss surrogate, its best checkpoint is chosen by held-out 0/1 error, and
its scores are thresholded, r_hat in {0, 1} = 1{sigmoid(.) >= 1/2}.

Data accounting: the verifier trains on n prompts x r rollouts (r = 1 by default, so it sees n
labelled base traces, as SFT sees n expert traces). It is evaluated every `optim.eval_every`
steps on `val_prompts` prompts x r rollouts of other training-split prompts (validation data,
used only to choose when to stop and counted in config.json as `validation_traces`); each
evaluation logs validation loss, AUC over all prefixes, AUC among prefixes of equal length
(longer prefixes are more often correct, so the pooled AUC rewards knowing the length alone), AUC
of the final prefix against trace success, and 0/1 error beside the error of the best constant.
Training runs up to `epochs` passes over the n x r rollouts. Scores at h beyond a trace's end
repeat the score of its last token: that prefix is the whole trace.

Run: `veriscale train verifier --base runs/base-high --out runs/verifier [--config configs/verifier.toml]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from veriscale.config import from_dict, knob, to_dict
from veriscale.learn.loop import BestCheckpoint, OptimConfig, epoch_steps, jsonl_log, train_lm
from veriscale.policy import checkpoint
from veriscale.policy.gpt import GPT, GPTConfig
from veriscale.policy.sampler import GPTSampler, load_gpt_policy
from veriscale.tasks.base import Rollouts
from veriscale.tasks.planted import PlantedConfig, PlantedTask

Loss = Literal["log", "squared", "zero_one"]


@dataclass
class VerifierOptimConfig(OptimConfig):
    """The verifier's own defaults (ours). A subclass, so overriding one optim key keeps the others."""

    steps: int = knob(600, "most optimizer steps (epochs and early stopping usually end sooner)", min=1)
    batch_size: int = knob(32, "rollouts per step (all their prefixes are labelled)", min=1)
    lr: float = knob(1e-3, "peak learning rate", min=0.0)
    warmup: int = knob(10, "linear warm-up steps (early stopping waits for them)", min=0)
    weight_decay: float = knob(0.0, "AdamW weight decay", min=0.0)
    eval_every: int = knob(10, "steps between validation evaluations (early-stopping checks)", min=1)


@dataclass
class VerifierConfig:
    n: int = knob(128, "n: training prompts, the VB data budget", min=1)
    r: int = knob(1, "rollouts of pi_b per prompt (1: n labelled traces, data-matched with SFT's n; ours)", min=1)
    loss: Loss = knob("log", "log (Alg. 1), squared (Alg. 1), or zero_one (Alg. 2: thresholded classifier)")
    temperature: float = knob(1.0, "sampling temperature of the rollouts", min=0.0)
    epochs: int = knob(40, "most passes over the n x r rollouts (ours)", min=1)
    val_prompts: int = knob(256, "prompts of other training prompts (x r rollouts) for early stopping (ours)",
                            min=1)
    patience: int = knob(5, "validation evaluations without improvement before stopping (0 = never; ours)", min=0)
    seed: int = knob(0, "seed of the rollouts", min=0)
    data_seed: int = knob(0, "seed of the training prompts (the same n prompts as SFT/RL by default)", min=0)
    threads: int = knob(0, "torch CPU threads (0 = torch's default)", min=0)
    optim: VerifierOptimConfig = field(default_factory=VerifierOptimConfig)


class Verifier(nn.Module):
    """GPT body (from pi_b) + scalar head: per-prefix probability that a correct answer is already out."""

    def __init__(self, gpt: GPT, task: PlantedTask, hard: bool = False):
        super().__init__()
        self.gpt, self.task, self.hard = gpt, task, hard
        self.value = nn.Linear(gpt.cfg.d_model, 1)
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    @property
    def prompt_len(self) -> int:
        return self.task.cfg.prompt_len + 2  # BOS x SEP

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, S) token ids -> (B, S) success logits after reading each position."""
        return self.value(self.gpt.body(seq)).squeeze(-1)

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        return (p >= 0.5).to(p.dtype) if self.hard else p

    @staticmethod
    def _unpack(tokens: Rollouts | torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) tokens and (B,) lengths; a bare tensor's length is its count of non-pad tokens
        (padding only ever follows the trace)."""
        if isinstance(tokens, Rollouts):
            return tokens.tokens, tokens.counts
        return tokens, (tokens != pad).sum(1)

    @torch.no_grad()
    def score(self, prompts: torch.Tensor, rollouts_or_tokens: Rollouts | torch.Tensor,
              batch_size: int = 64) -> torch.Tensor:
        """(B, k) prompts, (B, L) traces -> (B, L) r_hat of each prefix h = 1..L.

        One forward over BOS x SEP trace per chunk of `batch_size` rows. Causal attention means
        padding after a trace never changes its earlier positions, so position P-1+h holds the
        score of the prefix of length h; positions past the trace's end repeat its last score.
        Rows are chunked in order of length and each chunk is cut to its longest trace, so
        little compute goes to padding.
        """
        tokens, counts = self._unpack(rollouts_or_tokens, self.task.pad)
        B, L = tokens.shape
        P = self.prompt_len
        # Column of logits[:, P-1:] (prefix lengths 0..w) holding prefix h = 1..L: min(h, count).
        cols = torch.minimum(torch.arange(1, L + 1)[None], counts[:, None])  # (B, L)
        out = torch.empty(B, L)
        order = counts.argsort()
        for i in range(0, B, batch_size):
            rows = order[i:i + batch_size]
            w = int(counts[rows].max())
            seq = torch.cat([self.task.encode(prompts[rows]), tokens[rows, :w]], 1)  # (b, P+w)
            logits = self(seq)[:, P - 1:]  # (b, w+1): prefix lengths 0..w
            out[rows] = self._probs(logits.gather(1, cols[rows]))
        return out

    @torch.no_grad()
    def score_reference(self, prompts: torch.Tensor, rollouts_or_tokens: Rollouts | torch.Tensor) -> torch.Tensor:
        """Slow reference for `score`: one example at a time, each trace cut at its length."""
        tokens, counts = self._unpack(rollouts_or_tokens, self.task.pad)
        B, L = tokens.shape
        out = torch.empty(B, L)
        for i in range(B):
            c = int(counts[i])
            seq = torch.cat([self.task.encode(prompts[i:i + 1]), tokens[i:i + 1, :c]], 1)
            p = self._probs(self(seq)[0, self.prompt_len - 1:])  # (c+1,) prefix lengths 0..c
            for h in range(1, L + 1):
                out[i, h - 1] = p[min(h, c)]
        return out


def prefix_labels(T: torch.Tensor, L: int) -> torch.Tensor:
    """(B, L) float bi-level reward y_h = 1{h >= T} for h = 1..L, from (B,) first-success T."""
    return (torch.arange(1, L + 1)[None] >= T[:, None]).float()


def verifier_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, loss: Loss) -> torch.Tensor:
    """Mean per-prefix loss over masked positions; logits/labels/mask (B, L). zero_one uses the
    log-loss surrogate (Algorithm 2 trains a classifier through it)."""
    if loss == "squared":
        per = (torch.sigmoid(logits) - labels) ** 2
    else:
        per = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    m = mask.float()
    return (per * m).sum() / m.sum().clamp(min=1.0)


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); nan without both classes."""
    scores, labels = scores.double().flatten(), labels.bool().flatten()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Average rank of every distinct score value (1-based), so tied scores share their rank.
    values, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    upper = counts.cumsum(0).double()
    avg_rank = upper - (counts.double() - 1) / 2
    rank_sum = avg_rank[inverse][labels].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auc_at_length(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> float:
    """AUC among prefixes of the same length h, averaged over h weighted by prefixes: what the
    verifier knows beyond "longer prefixes are more often correct". (B, L) inputs."""
    total, weight = 0.0, 0
    for h in range(labels.shape[1]):
        y = labels[mask[:, h], h]
        if 0 < y.sum() < len(y):
            total += auc(scores[mask[:, h], h], y) * len(y)
            weight += len(y)
    return total / weight if weight else float("nan")


def sample_labelled(model: GPT, task: PlantedTask, prompts: torch.Tensor, r: int, temperature: float,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 1 steps 1-2: (seq (B*r, P+H), labels (B*r, H), mask (B*r, H), T (B*r,))."""
    rep = prompts.repeat_interleave(r, 0)
    ro = GPTSampler(model, task).sample(rep, task.cfg.horizon, temperature=temperature, seed=seed)
    T = task.check(rep, ro)
    seq = torch.cat([task.encode(rep), ro.tokens], 1)
    return seq, prefix_labels(T, ro.tokens.shape[1]), ro.mask, T


@torch.no_grad()
def heldout_metrics(verifier: Verifier, seq: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                    loss: Loss) -> dict:
    """Held-out loss, AUC (all prefixes; among prefixes of equal length; final prefix against
    trace success), and 0/1 error beside the best constant's."""
    verifier.eval()
    logits = verifier(seq)[:, verifier.prompt_len:]  # (B, L) prefix lengths 1..L
    verifier.train()
    return prefix_metrics(logits, labels, mask, loss)


def prefix_metrics(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, loss: Loss) -> dict:
    """The metrics of `heldout_metrics` from (B, L) per-prefix logits (column h-1 = prefix h),
    labels and mask (True for h <= the trace's length); shared with the text verifier."""
    probs = torch.sigmoid(logits)
    p, y = probs[mask], labels[mask]
    last = mask.sum(1) - 1  # (B,) column of each trace's final prefix
    final_p, final_y = probs.gather(1, last[:, None]), labels.gather(1, last[:, None])
    base_rate = y.mean().item()
    return {"heldout_loss": verifier_loss(logits, labels, mask, loss).item(),
            "heldout_auc": auc(p, y), "heldout_auc_at_length": auc_at_length(probs, labels, mask),
            "heldout_auc_final": auc(final_p, final_y),
            "heldout_error": ((p >= 0.5).float() != y).float().mean().item(),
            "heldout_error_constant": min(base_rate, 1 - base_rate)}


def train_verifier(base_dir: str | Path, cfg: VerifierConfig, out: str | Path) -> Path:
    """Algorithm 1 (log/squared loss) or 2 (zero_one): sample, label, fit; writes `out`."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    policy, task, _ = load_gpt_policy(base_dir)
    prompts = task.prompts("train", cfg.n, cfg.data_seed)
    val_prompts = task.validation_prompts(prompts, cfg.val_prompts, cfg.data_seed + 7919)
    # Validation prompts are disjoint from the training prompts, so its prefixes are unseen.
    train_data = sample_labelled(policy, task, prompts, cfg.r, cfg.temperature, cfg.seed)[:3]
    held_data = sample_labelled(policy, task, val_prompts, cfg.r, cfg.temperature, cfg.seed + 1)[:3]
    verifier = Verifier(policy, task, hard=cfg.loss == "zero_one")
    with torch.no_grad():  # start from the base rate, so early steps learn features, not the prior
        rate = train_data[1][train_data[2]].mean().clamp(1e-3, 1 - 1e-3)
        verifier.value.bias.fill_(torch.logit(rate).item())
    P = verifier.prompt_len
    key = "heldout_error" if cfg.loss == "zero_one" else "heldout_loss"
    optim = replace(cfg.optim, steps=epoch_steps(cfg.optim.steps, cfg.epochs, cfg.n * cfg.r, cfg.optim.batch_size))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        checkpoint.save(out, verifier, {"stage": "verifier", "model": to_dict(policy.cfg),
                                        "task": to_dict(task.cfg), "run": to_dict(cfg), "base": str(base_dir),
                                        "hard": verifier.hard, "best_step": best.best_step,
                                        "steps_planned": optim.steps, "training_traces": cfg.n * cfg.r,
                                        "validation_traces": cfg.val_prompts * cfg.r, "heldout": dict(best.last)})

    def evaluate() -> dict:
        return heldout_metrics(verifier, *held_data, cfg.loss)

    best = BestCheckpoint(key, cfg.patience, save, min_step=optim.warmup)
    with jsonl_log(out / "metrics.jsonl") as log:
        init = {"step": -1, **evaluate()}
        log(init)
        best.update(init)
        train_lm(verifier, *train_data, optim, evaluate=evaluate, log=log, desc="verifier",
                 loss_fn=lambda m, x, y, mask: verifier_loss(m(x)[:, P:], y, mask, cfg.loss), stop=best.update)
    return out


def load_verifier(run_dir: str | Path, task: PlantedTask | None = None) -> Verifier:
    """The verifier of a run directory written by `train_verifier` (safetensors only), in eval
    mode; with `task`, refuse a verifier trained on a different task config."""
    cfg = checkpoint.read_config(run_dir)
    if cfg.get("stage") != "verifier":
        raise ValueError(f"{run_dir}: config.json has stage={cfg.get('stage')!r}, expected 'verifier'")
    own = from_dict(PlantedConfig, cfg["task"])
    if task is not None and own != task.cfg:
        raise ValueError(f"{run_dir}: the verifier was trained on a different task config than the policy's")
    task = PlantedTask(own)
    verifier = Verifier(GPT(from_dict(GPTConfig, cfg["model"])), task, hard=cfg["hard"])
    checkpoint.load_state(run_dir, verifier)
    return verifier.eval()
