"""The learned verifier of the verifier-based (VB) methods: SPEC §1 Algorithms 1 and 2, for
any policy (policy/base.py) and task.

Algorithm 1 (simple verifier-based algorithm), steps 1-3 here, step 4 in `search.py` (best-of-N)
and `learn/rl.py` (RL against the verifier):
  1. sample r rollouts tau ~ pi_b(.|x) of at most H tokens on each of n training prompts
     (`learn/samples.py`; H is the task horizon of a tiny-GPT policy, else `horizon`);
  2. label every prefix h = 1..|tau| with the task checker's verdict on it (`labelled`): the
     bi-level reward y_h = 1{h >= T(tau)} on the planted task; on a text task the grader's
     verdict on the trace cut at h, which a later final answer can turn back to 0;
  3. fit r_hat(x, tau_<=h) = sigmoid(w . z_h + b), where z_h is the policy body's final hidden
     state after reading prompt + tau_1..tau_h (the body starts from pi_b), by
        log loss      min  -mean_{i,h} [ y log r_hat + (1 - y) log(1 - r_hat) ]   (default)
        squared loss  min   mean_{i,h} (r_hat - y)^2
     averaged over all labelled prefixes of all training rollouts (token-level normalisation).
Algorithm 2 (`loss = "zero_one"`) is the same with the verifier used as a classifier: it is
trained with the log-loss surrogate, its best checkpoint is chosen by held-out 0/1 error, and
its scores are thresholded, r_hat in {0, 1} = 1{sigmoid(.) >= 1/2}.

Data accounting: the verifier trains on n prompts x r rollouts (r = 1 by default, so it sees n
labelled base traces, as SFT sees n expert traces). It is evaluated every `optim.eval_every`
steps on `samples.val_prompts` other training prompts x r rollouts (validation data, used only
to choose when to stop and counted in veriscale.json as `validation_traces`; `select` says by
what: the validation loss, the final prefix's AUC, which can rise while the loss does not, or the
equal-length AUC, which reads every prefix and so is less noisy);
each evaluation
logs validation loss, AUC over all prefixes, AUC among prefixes of equal length (longer
prefixes are more often correct, so the pooled AUC rewards knowing the length alone), AUC of the
final prefix against trace success, and 0/1 error beside the error of the best constant.
Training runs up to `epochs` passes over the n x r rollouts; the best weights are kept.
Scores at h beyond a trace's end repeat the score of its last token: that prefix is the whole
trace. `train_layers` (ours, for CPU) trains only the body's top blocks.

A run directory is the body's run directory (stage "verifier") plus `value_head.safetensors`.

Pessimism (`ensemble`, `pessimism`, `lcb_k`; learn/ensemble.py): the paper's fast rate is for a
policy optimised against a pessimistic reward over a class of approximate rewards; K > 1 fits K
verifiers on bootstrap resamples of the same n labelled traces (counted once) and scores with
their minimum, or mean - lcb_k x sd. The defaults (K = 1, none) are the point verifier above.

Run: `veriscale train verifier --base runs/base-high --out runs/verifier`, or `--base smollm2
--task gym:basic_arithmetic --config configs/llm/verifier.toml`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from veriscale.config import ConfigError, knob, to_dict
from veriscale.learn import samples as samples_
from veriscale.learn.data import join, prefix_positions
from veriscale.learn.loop import BestCheckpoint, OptimConfig, Snapshot, epoch_steps, features, jsonl_log, train_lm
from veriscale.policy.base import PolicyError, read_meta
from veriscale.policy.load import load_policy
from veriscale.policy.text import HFConfig
from veriscale.tasks.base import Rollouts, Task, id_lengths, take

Loss = Literal["log", "squared", "zero_one"]
Select = Literal["loss", "auc", "auc_length"]
# What `select` stops on and keeps the best of: (metric key, higher is better).
SELECT = {"loss": ("heldout_loss", False), "zero_one": ("heldout_error", False), "auc": ("heldout_auc_final", True),
          "auc_length": ("heldout_auc_at_length", True)}
HEAD = "value_head.safetensors"


@dataclass
class VerifierConfig:
    n: int = knob(128, "n: training prompts, the VB data budget", min=1)
    loss: Loss = knob("log", "log (Alg. 1), squared (Alg. 1), or zero_one (Alg. 2: thresholded classifier)")
    select: Select = knob("loss", "early stopping and the kept weights: loss (held-out loss; held-out 0/1 error "
                          "for zero_one), auc (held-out AUC of the final prefix against trace success: the "
                          "ranking best-of-N, weighted majority and RL read) or auc_length (held-out AUC "
                          "among prefixes of equal length, less noisy than the final prefix's; ours)")
    epochs: int = knob(40, "most passes over the n x r rollouts (ours)", min=1)
    patience: int = knob(5, "validation evaluations without improvement before stopping (0 = never; ours)", min=0)
    train_layers: int = knob(0, "train only the top k blocks of the body (0 = all; ours, for CPU)", min=0)
    horizon: int = knob(0, "H of the labelled rollouts (0 = the tiny GPT's task horizon; text tasks need it)",
                        min=0)
    min_positives: int = knob(1, "training traces that must succeed, else training stops before it starts (with "
                                 "none, the verifier can only learn 'never'; 0 = train anyway)", min=0)
    eval_batch: int = knob(256, "rows per forward pass of a validation evaluation (memory)", min=1)
    seed: int = knob(0, "seed of the rollouts", min=0)
    data_seed: int = knob(0, "seed of the training prompts (the same n prompts as SFT/RL by default)", min=0)
    threads: int = knob(0, "torch CPU threads (0 = torch's default)", min=0)
    samples: samples_.SamplesConfig = knob(samples_.SamplesConfig(), "the labelled rollouts (learn/samples.py)")
    optim: OptimConfig = knob(OptimConfig(steps=600, batch_size=32, lr=1e-3, warmup=10, weight_decay=0.0,
                                          eval_every=10), "optimizer (learn/loop.py); ours")
    ensemble: int = knob(1, "K verifiers, each fit on a bootstrap resample (same size) of the n labelled traces "
                            "(1 = the point verifier on the traces themselves; learn/ensemble.py; ours)", min=1)
    pessimism: Literal["none", "min", "lcb"] = knob(
        "none", "how an ensemble's K scores combine: none (their mean), min (the pessimistic minimum) or lcb "
                "(mean - lcb_k x sd); ours, our reading of the paper's pessimistic reward class")
    lcb_k: float = knob(1.0, "standard deviations below the members' mean of pessimism = lcb (ours)", min=0.0)

    def __post_init__(self) -> None:
        if self.pessimism != "none" and self.ensemble < 2:
            raise ConfigError(f"pessimism: {self.pessimism} reads the spread of an ensemble; set ensemble >= 2")


class Verifier(nn.Module):
    """Policy body + scalar head: per-prefix probability that a correct answer is already out.
    It reads prompts exactly as the policy does (`encode_prompts`)."""

    def __init__(self, policy, hard: bool = False):
        super().__init__()
        self.policy, self.hard = policy, hard
        self.lm = policy.model  # registered, so the body's parameters train with the head
        self.value = nn.Linear(policy.hidden_size, 1)
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)
        self.top = None  # while training with a frozen trunk: the policy's `top_blocks()` split

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S) right-padded ids, or their (B, S, d) frozen-trunk features when training with
        `top` set -> (B, S) success logits after reading each position."""
        h = self.policy.hidden(x) if x.dim() == 2 else self.top.hidden(x)
        return self.value(h).squeeze(-1).float()

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        return (p >= 0.5).to(p.dtype) if self.hard else p

    @torch.no_grad()
    def score(self, prompts: Any, rollouts: Rollouts, batch_size: int = 64) -> torch.Tensor:
        """(B, L) r_hat of every prefix h = 1..L of rollouts (width L) of `prompts`.

        One forward over prompt + trace per chunk of `batch_size` rows. Causal attention means
        padding after a trace never changes its earlier positions; positions past a trace's end
        repeat its last score. Rows are chunked in order of length and each chunk is cut to its
        longest trace, so little compute goes to padding.
        """
        B, L = rollouts.tokens.shape
        prompt_ids = self.policy.encode_prompts(prompts)
        counts = rollouts.counts
        order = (counts + id_lengths(prompt_ids)).argsort()
        out = torch.empty(B, L)
        for i in range(0, B, batch_size):
            rows = order[i:i + batch_size]
            w = int(counts[rows].max())
            chunk = Rollouts(rollouts.tokens[rows, :w], rollouts.mask[rows, :w], counts[rows])
            ids = take(prompt_ids, rows)
            seq, starts, lengths = join(ids, chunk, self.policy.pad_id)  # (b, P + w)
            out[rows] = self._probs(self(seq).gather(1, prefix_positions(starts, lengths, L)))
        return out

    @torch.no_grad()
    def score_reference(self, prompts: Any, rollouts: Rollouts) -> torch.Tensor:
        """Slow reference for `score`: one example at a time, no padding."""
        B, L = rollouts.tokens.shape
        prompt_ids = self.policy.encode_prompts(prompts)
        out = torch.empty(B, L)
        for i in range(B):
            c, ids = int(rollouts.counts[i]), list(prompt_ids[i])
            p = self._probs(self(torch.tensor([ids + rollouts.tokens[i, :c].tolist()]))[0])
            for h in range(1, L + 1):
                out[i, h - 1] = p[len(ids) + min(h, c) - 1]
        return out


def labelled(verifier: Verifier, task: Task, prompts: Any, ro: Rollouts) -> dict[str, torch.Tensor]:
    """Training tensors of rollouts: seq (N, S), the position of every prefix h = 1..L (N, L),
    labels y_h (N, L) and mask (N, L), True for h <= the trace's length. y_h is the task's verdict
    on the prefix of h tokens (`Task.prefix_verdicts`), exactly what the grader says of the trace
    cut there: 1{h >= T} on the planted task; on a text task 0 until a complete final answer is
    right, and 0 again where a later answer overrides a right one."""
    seq, starts, lengths = join(verifier.policy.encode_prompts(prompts), ro, verifier.policy.pad_id)
    L = ro.tokens.shape[1]
    return {"seq": seq, "pos": prefix_positions(starts, lengths, L),
            "labels": task.prefix_verdicts(prompts, ro).float(), "mask": torch.arange(L)[None] < lengths[:, None]}


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


def prefix_metrics(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, loss: Loss) -> dict:
    """Held-out loss, AUC (all prefixes; among prefixes of equal length; final prefix against
    trace success), and 0/1 error beside the best constant's, from (B, L) per-prefix logits
    (column h-1 = prefix h), labels and mask (True for h <= the trace's length)."""
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


def prefix_logits(verifier: Verifier, seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """(B, L) logits after each prefix of `labelled` rows: seq (B, S) ids or (B, S, d) features,
    pos (B, L). The rows are cut after the last position any prefix reads: right padding past it
    cannot change a causal model's earlier outputs, so the cut changes only the cost."""
    return verifier(seq[:, :int(pos.max()) + 1]).gather(1, pos)


@torch.no_grad()
def heldout_metrics(verifier: Verifier, held: dict[str, torch.Tensor], loss: Loss, batch_size: int = 256) -> dict:
    """`prefix_metrics` on validation rollouts, in forward passes of `batch_size` rows taken in
    order of length (so each pass is cut to rows of similar length)."""
    verifier.eval()
    pos = held["pos"]
    logits = torch.empty(pos.shape)  # (N, L)
    order = pos.max(1).values.argsort()
    for i in range(0, len(order), batch_size):
        rows = order[i:i + batch_size]
        logits[rows] = prefix_logits(verifier, held["seq"][rows], pos[rows])
    verifier.train()
    return prefix_metrics(logits, held["labels"], held["mask"], loss)


def check_learnable(train: dict[str, torch.Tensor], held: dict[str, torch.Tensor], key: str, cfg: VerifierConfig,
                    H: int) -> None:
    """Refuse, before any training, labelled data a verifier cannot learn from: fewer successful
    training traces than `min_positives` (with none, every label is 0), or validation traces on
    which the stopping metric `key` is undefined (an AUC without both classes never improves, so
    no weights would be kept)."""
    positives = int(train["labels"].amax(1).sum())  # traces with a correct prefix
    if positives < cfg.min_positives:
        raise ValueError(f"verifier: {positives} of the {len(train['labels'])} training traces (n={cfg.n} prompts x "
                         f"samples.r={cfg.samples.r}) reach a correct answer within H={H}, min_positives="
                         f"{cfg.min_positives}: too few positive examples; raise samples.r or n (or horizon), start "
                         "from a base that succeeds more often (SFT), or set min_positives=0")
    zeros = torch.zeros(held["labels"].shape)
    if not math.isfinite(prefix_metrics(zeros, held["labels"], held["mask"], cfg.loss)[key]):
        raise ValueError(f"verifier: select={cfg.select} reads {key}, undefined on the {len(held['labels'])} "
                         f"validation traces (they need successes and failures); raise samples.val_prompts or "
                         "samples.r, or set select=loss")


def train_verifier(policy, task: Task, cfg: VerifierConfig, out: str | Path,
                   samples: samples_.Samples | None = None, meta: dict | None = None) -> Path:
    """Algorithm 1 (log/squared loss) or 2 (zero_one) on `policy` (its body trains in place):
    sample and label (unless `samples` are given), fit; writes the run directory `out`. One
    verifier: `learn.ensemble.fit_verifier` trains the pessimistic ensemble of `cfg.ensemble` > 1."""
    if cfg.ensemble > 1:
        raise ValueError(f"ensemble: {cfg.ensemble} members are trained by learn.ensemble.fit_verifier")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    H = cfg.horizon or samples_.horizon_of(policy)
    if samples is None:
        samples = samples_.draw(policy, task, cfg.samples, cfg.n, H, cfg.data_seed, cfg.seed)
    verifier = Verifier(policy, hard=cfg.loss == "zero_one")
    policy.train_top(cfg.train_layers)
    train = labelled(verifier, task, samples.repeated("train"), samples.rollouts)
    held = labelled(verifier, task, samples.repeated("val"), samples.val_rollouts)
    key, higher = SELECT["zero_one" if cfg.select == "loss" and cfg.loss == "zero_one" else cfg.select]
    check_learnable(train, held, key, cfg, H)
    verifier.top = policy.top_blocks()
    if verifier.top is not None:  # the frozen trunk's features (N, S, d), computed once for every epoch
        for d in (train, held):
            d["seq"] = features(verifier.top, d["seq"], cfg.eval_batch)
    with torch.no_grad():  # start from the base rate, so early steps learn features, not the prior
        rate = train["labels"][train["mask"]].mean().clamp(1e-3, 1 - 1e-3)
        verifier.value.bias.fill_(torch.logit(rate).item())
    traces = len(train["seq"])
    optim = replace(cfg.optim, steps=epoch_steps(cfg.optim.steps, cfg.epochs, traces, cfg.optim.batch_size))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    snapshot = Snapshot(verifier)

    def evaluate() -> dict:
        return heldout_metrics(verifier, held, cfg.loss, cfg.eval_batch)

    def loss_fn(model: Verifier, idx: torch.Tensor) -> torch.Tensor:
        return verifier_loss(prefix_logits(model, train["seq"][idx], train["pos"][idx]), train["labels"][idx],
                             train["mask"][idx], cfg.loss)

    best = BestCheckpoint(key, cfg.patience, snapshot.take, min_step=optim.warmup, higher=higher)
    try:
        with jsonl_log(out / "metrics.jsonl") as log:
            init = {"step": -1, **evaluate()}
            log(init)
            best.update(init)
            train_lm(verifier, train["seq"], train["labels"], train["mask"], optim, evaluate=evaluate, log=log,
                     desc="verifier", loss_fn=loss_fn, stop=best.update)
    finally:  # also after a NaN/inf stop: the best weights so far are what the directory keeps
        snapshot.restore()
        policy.save(out, {"base": policy.spec, **(meta or {}), "stage": "verifier", "run": to_dict(cfg), "task": to_dict(task.cfg), "task_spec": task.name,
                          "hard": verifier.hard, "best_step": best.best_step, "steps_planned": optim.steps,
                          "horizon": H, "training_traces": traces, "validation_traces": len(held["seq"]),
                          "heldout": dict(best.best_record)})
        save_file({k: v.contiguous() for k, v in verifier.value.state_dict().items()}, str(out / HEAD))
    return out


def load_verifier(run_dir: str | Path, task: Task | None = None, hf: HFConfig | None = None) -> Verifier:
    """The verifier of a run directory written by `train_verifier` (safetensors only), in eval
    mode (`learn.ensemble.open_verifier` also opens an ensemble's directory); with a planted
    `task`, refuse a verifier trained on a different task config."""
    meta = read_meta(run_dir)
    if meta is None or meta.get("stage") != "verifier":
        raise PolicyError(f"{run_dir}: not a verifier run directory (stage "
                          f"{None if meta is None else meta.get('stage')!r})")
    if "members" in meta:
        raise PolicyError(f"{run_dir}: an ensemble of verifiers (learn.ensemble.open_verifier loads it)")
    policy = load_policy(run_dir, hf=hf, stages=("verifier",))
    own = policy.task
    if task is not None and own is not None and own.cfg != task.cfg:
        raise PolicyError(f"{run_dir}: the verifier was trained on a different task config than the policy's")
    head = Path(run_dir) / HEAD
    if not head.is_file():
        raise PolicyError(f"{run_dir}: no {HEAD}")
    verifier = Verifier(policy, hard=meta["hard"])
    try:
        verifier.value.load_state_dict(load_file(str(head)))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise PolicyError(f"{head}: unreadable ({type(e).__name__})") from None
    return verifier.eval()
