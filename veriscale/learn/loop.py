"""The one language-model training loop that pretraining and SFT share.

Objective: masked next-token cross-entropy, averaged over the tokens whose loss mask is set
(token-level normalisation). AdamW, linear warm-up then cosine decay to `min_lr_ratio * lr`,
gradient clipping. A non-finite loss stops training with an error and leaves the last good
checkpoint in place (the caller saves only after `train_lm` returns or at eval points).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from veriscale import progress
from veriscale.atomic import json_text
from veriscale.config import knob


@dataclass
class OptimConfig:
    steps: int = knob(600, "optimizer steps", min=1)
    batch_size: int = knob(64, "sequences per step", min=1)
    lr: float = knob(3e-3, "peak learning rate", min=0.0)
    min_lr_ratio: float = knob(0.1, "final learning rate as a fraction of lr (cosine decay)", min=0.0, max=1.0)
    warmup: int = knob(30, "linear warm-up steps", min=0)
    weight_decay: float = knob(0.05, "AdamW weight decay", min=0.0)
    grad_clip: float = knob(1.0, "gradient-norm clip (0 = off)", min=0.0)
    eval_every: int = knob(100, "steps between held-out evaluations", min=1)
    seed: int = knob(0, "seed of initialisation and data order", min=0)


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or inf loss."""


def masked_ce(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over masked positions: logits (B, T, V), targets/loss_mask (B, T)."""
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    m = loss_mask.flatten().float()
    return (nll * m).sum() / m.sum().clamp(min=1.0)


def width(mask: torch.Tensor) -> int:
    """Columns up to the last set position of a (B, T) mask, at least 1. Rows are right-padded and
    the models causal: no output before that column reads a column after it, so cutting them
    changes only the cost."""
    cols = mask.any(0).nonzero()
    return int(cols.max()) + 1 if len(cols) else 1


@torch.no_grad()
def eval_nll(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor,
             batch_size: int = 256) -> float:
    """Token-averaged masked NLL of `model` (a `FullLogits` or a `LogitsOf`) over a fixed held-out
    set, in chunks of `batch_size` rows taken in order of length, each cut to its `width`."""
    total, count = 0.0, 0
    model.eval()
    order = (loss_mask.float() * torch.arange(1, loss_mask.shape[1] + 1)).argmax(1).argsort()  # by last loss column
    for i in range(0, len(inputs), batch_size):
        rows = order[i:i + batch_size]
        w = width(loss_mask[rows])
        nll, m = model.nll(inputs[rows, :w], targets[rows, :w], loss_mask[rows, :w])
        total, count = total + nll.item(), count + int(m)
    model.train()
    return total / max(count, 1)


def lr_at(step: int, cfg: OptimConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless epochs of shuffled index batches (the last short batch of an epoch is dropped
    unless the dataset is smaller than one batch). Batches are not grouped by length: measured,
    length-sorted batches stopped a tiny base from learning the task at all (BENCHMARKS.md)."""
    while True:
        perm = torch.randperm(n, generator=generator)
        stop = max(1, n - batch_size + 1) if n >= batch_size else 1
        for i in range(0, stop, batch_size):
            yield perm[i:i + batch_size]


def epoch_steps(max_steps: int, epochs: int, n: int, batch_size: int) -> int:
    """Optimizer steps for `epochs` passes over n items in batches of batch_size (a batch
    larger than n holds all n), at most max_steps."""
    return max(1, min(max_steps, epochs * math.ceil(n / min(batch_size, n))))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (never on biases or LayerNorm)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def check_finite(loss: torch.Tensor, desc: str, step: int) -> None:
    """Raise NonFiniteLoss for a NaN/inf loss, before it can reach the weights."""
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"{desc}: loss is {loss.item()} at step {step}; stopped, last checkpoint kept")


LossFn = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


def train_lm(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor,
             cfg: OptimConfig, *, evaluate: Callable[[], dict] | None = None,
             log: Callable[[dict], None] | None = None, desc: str = "train",
             loss_fn: LossFn | None = None, stop: Callable[[dict], bool] | None = None) -> list[dict]:
    """Train on (N, T) inputs/targets/loss_mask for cfg.steps; returns the per-step records.

    `model` is a `FullLogits` or a `LogitsOf`: its `nll` is the next-token loss.
    `evaluate()` is called every eval_every steps and at the end; its dict joins the record.
    `loss_fn(model, idx)` replaces the next-token loss on the rows `idx` (the verifier's
    per-prefix loss uses it); `stop(record)`, called after each evaluation, ends training early
    when it returns True (early stopping, see `BestCheckpoint`).
    """
    g = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    records = []
    batches = minibatches(len(inputs), cfg.batch_size, g)
    model.train()
    bar = progress.bar(range(cfg.steps), desc=desc)
    for step in bar:
        idx = next(batches)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        if loss_fn is None:
            w = width(loss_mask[idx])
            nll, m = model.nll(inputs[idx, :w], targets[idx, :w], loss_mask[idx, :w])
            loss = nll / m.clamp(min=1)
        else:
            loss = loss_fn(model, idx)
        check_finite(loss, desc, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        rec = {"step": step, "loss": loss.item(), "lr": lr_at(step, cfg),
               "tokens": int(loss_mask[idx].sum())}
        evaluated = evaluate is not None and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps)
        if evaluated:
            rec.update(evaluate())
            bar.set_postfix(loss=f"{rec['loss']:.3f}", **{k: f"{v:.3f}" for k, v in rec.items()
                                                         if k.startswith(("heldout", "val_"))})
        records.append(rec)
        if log is not None:
            log(rec)
        if evaluated and stop is not None and stop(rec):
            break
    return records


class BestCheckpoint:
    """Early stopping on a held-out metric (lower is better, or higher with `higher=True`) that
    keeps the best weights.

    `update(record)` calls `save()` (a `Snapshot.take`) whenever record[key] improves on the best
    so far and returns True (stop) after `patience` consecutive evaluations without improvement
    (0 = never stop early). A NaN metric never improves.
    """

    def __init__(self, key: str, patience: int, save: Callable[[], None], min_step: int = 0, higher: bool = False):
        self.key, self.patience, self.save, self.min_step = key, patience, save, min_step
        self.sign = -1.0 if higher else 1.0  # compare sign * value, lower is better
        self.best, self.best_step, self.bad, self.best_record = math.inf, -1, 0, {}

    def update(self, rec: dict) -> bool:
        """Save on improvement; True (stop) after `patience` evaluations without one, never
        before step `min_step` (the end of the warm-up)."""
        if self.sign * rec[self.key] < self.best:
            self.best, self.best_step, self.bad = self.sign * rec[self.key], rec["step"], 0
            self.best_record = rec
            self.save()
            return False
        self.bad += 1
        return 0 < self.patience <= self.bad and rec["step"] >= self.min_step


@contextmanager
def jsonl_log(path: Path) -> Iterator[Callable[[dict], None]]:
    """A fresh metrics.jsonl; each record is flushed as written, so a crash keeps the history."""
    with Path(path).open("w") as f:
        def log(rec: dict) -> None:
            f.write(json_text(rec) + "\n")
            f.flush()
        yield log


class Snapshot:
    """The best weights seen so far, kept in memory: `take()` copies every trainable parameter
    of `module` (the early-stopping save of `BestCheckpoint`), `restore()` writes the copy back
    before the run directory is written once. Frozen parameters never change, so they are not
    copied."""

    def __init__(self, module: torch.nn.Module):
        self.params = {k: p for k, p in module.named_parameters() if p.requires_grad}
        self.state: dict[str, torch.Tensor] = {}

    def take(self) -> None:
        self.state = {k: p.detach().clone() for k, p in self.params.items()}

    @torch.no_grad()
    def restore(self) -> None:
        if not self.state:  # never taken (no evaluation was finite): the weights stay as trained
            return
        for k, p in self.params.items():
            p.copy_(self.state[k])


class FullLogits(torch.nn.Module):
    """A module `(N, S) ids -> (N, S, V) logits` (the tiny GPT in pretraining) as the model
    `train_lm` trains and `eval_nll` evaluates: its loss reads the logits at every position."""

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm(x)

    def nll(self, inputs: torch.Tensor, targets: torch.Tensor,
            loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed NLL, token count) over the masked positions of (B, T) rows."""
        m = loss_mask.bool()
        return masked_ce(self(inputs), targets, loss_mask) * m.sum(), m.sum()


class LogitsOf(torch.nn.Module):
    """A policy seen as the module `train_lm` trains: `(N, S) ids -> (N, S, V) logits`, or, with
    the policy's `top_blocks()` split, `(N, S, d) frozen-block features -> (N, S, V) logits`
    (`inputs` turns ids into what `forward` reads). Its parameters are the policy's network's."""

    def __init__(self, policy, top=None):
        super().__init__()
        self.policy, self.lm, self.top = policy, policy.model, top

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.policy.logits(x) if self.top is None else self.top.logits(x)

    def nll(self, inputs: torch.Tensor, targets: torch.Tensor,
            loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed NLL, token count) over the masked positions of (B, T) rows, the head run only
        there (`logits_at`)."""
        m = loss_mask.bool()
        return F.cross_entropy(self.logits_at(inputs, m).float(), targets[m], reduction="sum"), m.sum()

    def logits_at(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(M, V) logits at the M positions where the (N, S) mask is set: every position runs the
        blocks (attention needs them), only these run the head, a 49k x d matmul for SmolLM2."""
        return self.policy.head(self.hidden_at(x, mask))

    def hidden_at(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(M, d) final hidden states at the M positions where the (N, S) mask is set."""
        h = self.policy.hidden(x) if self.top is None else self.top.hidden(x)  # (N, S, d)
        return h[mask]

    def inputs(self, ids: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """What `forward` reads for (N, S) ids: the ids, or their frozen-block features
        (N, S, d), computed once in chunks of `batch_size` rows."""
        return ids if self.top is None else features(self.top, ids, batch_size)


def features(top, ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N, S) ids -> (N, S, d) hidden states after the frozen lower blocks of `top`."""
    return torch.cat([top.features(ids[i:i + batch_size]) for i in range(0, len(ids), batch_size)])
