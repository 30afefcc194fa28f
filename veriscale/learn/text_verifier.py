"""The outcome verifier of the LLM track: a causal LM's body plus a scalar head, trained on base
samples labelled by the checker (SPEC §1 Algorithms 1 and 2, on text).

Data: the checked base samples of `text_samples.py` (r samples of at most H tokens on each of the
n training prompts). Every prefix h = 1..|tau| of every sample gets the bi-level label
y_h = 1{h >= T(tau)}: 1 once the trace has completed a correct final answer (so the final
prefix's label is the outcome). The verifier reads prompt + trace once, causally, and
    r_hat(x, tau_<=h) = sigmoid(w . z_h + b),
z_h the last hidden state of the LM body at the trace's h-th token. Objective, averaged over all
labelled prefixes (token-level normalisation), exactly as the didactic verifier
(`learn/verifier.py`, whose loss, labels and metrics are reused here):
    log loss      min -mean_{i,h} [ y log r_hat + (1 - y) log(1 - r_hat) ]   (Algorithm 1, default)
    squared loss  min  mean_{i,h} (r_hat - y)^2                              (Algorithm 1)
    zero_one      log-loss surrogate, best checkpoint by held-out 0/1 error, scores thresholded
                  at 1/2 (Algorithm 2).
The body starts from the base policy; `train_layers` (ours, for CPU) trains only its top blocks.
A share `heldout` of the prompts (all their samples) is held out for early stopping and AUCs.

Best-of-N and weighted majority use the score of a sample's final prefix (`search.py`).
A run directory is the body's transformers directory plus `value_head.safetensors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from veriscale.config import knob, to_dict
from veriscale.learn.loop import BestCheckpoint, OptimConfig, heldout_split, jsonl_log, train_lm
from veriscale.learn.text_lm import (TrainableSnapshot, freeze_below, pack, prefix_positions, read_text_run,
                                     save_text_run)
from veriscale.learn.text_samples import read_samples
from veriscale.learn.verifier import Loss, prefix_labels, prefix_metrics, verifier_loss
from veriscale.tasks.base import NEVER, Rollouts

HEAD = "value_head.safetensors"


@dataclass
class TextVerifierOptimConfig(OptimConfig):
    """Our defaults for a ~100M-parameter body on 2 CPU cores."""

    steps: int = knob(40, "optimizer steps (an upper bound: early stopping may end sooner)", min=1)
    batch_size: int = knob(8, "samples per step (all their prefixes are labelled)", min=1)
    lr: float = knob(1e-4, "peak learning rate", min=0.0)
    warmup: int = knob(3, "linear warm-up steps", min=0)
    weight_decay: float = knob(0.0, "AdamW weight decay", min=0.0)
    eval_every: int = knob(5, "steps between held-out evaluations (early-stopping checks)", min=1)


@dataclass
class TextVerifierConfig:
    loss: Loss = knob("log", "log (Alg. 1), squared (Alg. 1), or zero_one (Alg. 2: thresholded classifier)")
    heldout: float = knob(0.2, "share of the prompts held out for early stopping and AUC (ours)", min=0.01, max=0.5)
    patience: int = knob(2, "held-out evaluations without improvement before stopping (0 = never)", min=0)
    train_layers: int = knob(4, "train only the top k blocks of the body (0 = all; ours, for CPU)", min=0)
    threads: int = knob(0, "torch CPU threads (0 = torch's default)", min=0)
    optim: TextVerifierOptimConfig = field(default_factory=TextVerifierOptimConfig)


class TextVerifier(nn.Module):
    """LM body + scalar head: per-prefix probability that a correct final answer is already out.

    `encode(prompt) -> ids` is the sampler's prompt encoding (chat template included), so the
    verifier reads exactly what the policy read."""

    def __init__(self, lm, encode, pad_id: int, hard: bool = False):
        super().__init__()
        self.lm, self.encode, self.pad_id, self.hard = lm, encode, pad_id, hard
        self.value = nn.Linear(lm.config.hidden_size, 1)
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, S) right-padded ids -> (B, S) success logits after reading each position."""
        hidden = self.lm.base_model(input_ids=seq, use_cache=False).last_hidden_state  # (B, S, d)
        return self.value(hidden).squeeze(-1).float()

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        return (p >= 0.5).to(p.dtype) if self.hard else p

    @torch.no_grad()
    def score(self, prompts: Sequence[Any], rollouts: Rollouts, batch_size: int = 16) -> torch.Tensor:
        """(B, L) r_hat of every prefix h = 1..L of rollouts (width L) of `prompts`; past a trace's
        end its last score repeats. Rows go in chunks ordered by length (little padding)."""
        B, L = rollouts.tokens.shape
        out = torch.empty(B, L)
        prompt_ids = [self.encode(p) for p in prompts]
        order = sorted(range(B), key=lambda i: len(prompt_ids[i]) + int(rollouts.counts[i]))
        for i in range(0, B, batch_size):
            rows = order[i:i + batch_size]
            seq, starts, lengths = pack([prompt_ids[r] for r in rows],
                                        [rollouts.tokens[r, :rollouts.counts[r]].tolist() for r in rows], self.pad_id)
            logits = self(seq).gather(1, prefix_positions(starts, lengths, L))  # (b, L)
            out[rows] = self._probs(logits)
        return out

    @torch.no_grad()
    def score_reference(self, prompts: Sequence[Any], rollouts: Rollouts) -> torch.Tensor:
        """Slow reference for `score`: one example at a time, no padding."""
        B, L = rollouts.tokens.shape
        out = torch.empty(B, L)
        for i in range(B):
            c, ids = int(rollouts.counts[i]), self.encode(prompts[i])
            seq = torch.tensor([ids + rollouts.tokens[i, :c].tolist()])
            p = self._probs(self(seq)[0])
            for h in range(1, L + 1):
                out[i, h - 1] = p[len(ids) + min(h, c) - 1]
        return out


def labelled_batch(verifier: TextVerifier, problems: Sequence[Any], rows: list[dict]) -> dict[str, torch.Tensor]:
    """Training tensors for samples `rows` (of `text_samples`): seq (N, S); per-position labels
    and mask (N, S), set at the position of each trace token h (label y_h = 1{h >= T}); and the
    (N,) starts, lengths and T for per-prefix metrics."""
    seq, starts, lengths = pack([verifier.encode(problems[r["prompt"]]) for r in rows], [r["ids"] for r in rows],
                                verifier.pad_id)
    T = torch.tensor([NEVER if r["T"] is None else r["T"] for r in rows], dtype=torch.long)
    h = torch.arange(seq.shape[1])[None] - starts[:, None] + 1  # (N, S) prefix length ending at each position
    mask = (h >= 1) & (h <= lengths[:, None])
    labels = ((h >= T[:, None]) & mask).float()
    return {"seq": seq, "labels": labels, "mask": mask, "starts": starts, "lengths": lengths, "T": T}


@torch.no_grad()
def heldout_text_metrics(verifier: TextVerifier, held: dict[str, torch.Tensor], loss: Loss) -> dict:
    """`learn.verifier.prefix_metrics` on the held-out samples, per prefix h = 1..L."""
    verifier.eval()
    logits = torch.cat([verifier(held["seq"][i:i + 16]) for i in range(0, len(held["seq"]), 16)])
    verifier.train()
    L = int(held["lengths"].max())
    per_prefix = logits.gather(1, prefix_positions(held["starts"], held["lengths"], L))  # (N, L)
    mask = torch.arange(L)[None] < held["lengths"][:, None]
    return prefix_metrics(per_prefix, prefix_labels(held["T"], L), mask, loss)


def train_text_verifier(sampler, task, cfg: TextVerifierConfig, out: str | Path, *, samples_dir: str | Path,
                        meta: dict | None = None) -> Path:
    """Fit the verifier on the samples in `samples_dir` (the body is `sampler.model`, trained in
    place); writes the run directory `out` and returns it."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rows = read_samples(samples_dir)
    run = read_text_run(samples_dir)
    problems = task.prompts("train", run["n"], run["data_seed"])
    train_p, held_p = heldout_split(run["n"], cfg.heldout)  # by prompt: held-out prompts are never trained on
    held_ids = set(range(run["n"])[held_p])
    verifier = TextVerifier(sampler.model, sampler.encode, sampler.pad_id, hard=cfg.loss == "zero_one")
    freeze_below(verifier.lm, cfg.train_layers)
    train = labelled_batch(verifier, problems, [r for r in rows if r["prompt"] not in held_ids])
    held = labelled_batch(verifier, problems, [r for r in rows if r["prompt"] in held_ids])
    with torch.no_grad():  # start from the base rate, so early steps learn features, not the prior
        rate = train["labels"][train["mask"]].mean().clamp(1e-3, 1 - 1e-3)
        verifier.value.bias.fill_(torch.logit(rate).item())
    snapshot = TrainableSnapshot(verifier)
    key = "heldout_error" if cfg.loss == "zero_one" else "heldout_loss"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    best = BestCheckpoint(key, cfg.patience, snapshot.take)
    with jsonl_log(out / "metrics.jsonl") as log:
        init = {"step": -1, "samples": len(train["seq"]), **heldout_text_metrics(verifier, held, cfg.loss)}
        log(init)
        best.update(init)
        train_lm(verifier, train["seq"], train["labels"], train["mask"], cfg.optim,
                 evaluate=lambda: heldout_text_metrics(verifier, held, cfg.loss), log=log, desc="verifier",
                 loss_fn=lambda m, x, y, mask: verifier_loss(m(x), y, mask, cfg.loss), stop=best.update)
    snapshot.restore()
    save_text_run(out, verifier.lm, sampler.tok, {**(meta or {}), "stage": "verifier", "run": to_dict(cfg),
                                                  "hard": verifier.hard, "best_step": best.best_step})
    save_file({k: v.contiguous() for k, v in verifier.value.state_dict().items()}, str(out / HEAD))
    return out


def load_text_verifier(run_dir: str | Path, hf_cfg=None) -> TextVerifier:
    """The verifier of a run directory written by `train_text_verifier` (safetensors only), in eval mode."""
    from veriscale.policy.hf import load_hf_policy

    meta = read_text_run(run_dir)
    if meta.get("stage") != "verifier":
        raise ValueError(f"{run_dir}: stage is {meta.get('stage')!r}, expected 'verifier'")
    sampler = load_hf_policy(run_dir, hf_cfg)
    verifier = TextVerifier(sampler.model, sampler.encode, sampler.pad_id, hard=meta["hard"])
    verifier.value.load_state_dict(load_file(str(Path(run_dir) / HEAD)))
    return verifier.eval()
