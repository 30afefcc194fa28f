"""The pessimistic verifier: K verifiers fit on bootstrap resamples of the same n labelled traces,
scored by a pessimistic combination (VerifierConfig `ensemble`, `pessimism`, `lcb_k`).

Why: the fast 1/n rate of the paper's VB algorithm is proved for a policy that optimises a
*pessimistic* reward over a class of approximate reward functions (SPEC §1, third-party
descriptions); the point verifier of learn/verifier.py is our simplification. Our reading of that
class (ours: the paper's construction is not public): the K members r_hat_1..r_hat_K, each
Algorithm 1 (`train_verifier`, unchanged) on a bootstrap resample of the n training prompts, stand
for the reward functions the n labels cannot rule out, and every caller reads

    pessimism = "min":  r_pess(x, tau_<=h) = min_k r_hat_k(x, tau_<=h)
    pessimism = "lcb":  r_pess = clip(mean_k r_hat_k - lcb_k * sd_k r_hat_k, 0, 1)
                        (sd: the sample standard deviation over the K members, K - 1 denominator)
    pessimism = "none": r_pess = mean_k r_hat_k (a plain ensemble, the control)

so best-of-N, weighted majority and RL against the verifier (`Verifier.score`'s interface) maximise
the worst plausible reward instead of one estimate of it.

Member k trains on n prompts drawn with replacement from the n (all r samples of a drawn prompt
kept, so it reads n x r traces like the point verifier), with the generator seeded 1000 * seed + k
(ours); every member stops on the same validation traces. Labels: the K resamples reuse the same
n x r labelled traces and the same validation traces, so the run's `training_traces` and
`validation_traces` count them once, not K times. A run with ensemble = 1 is the point verifier
itself, trained on the n traces as they are (`train_verifier` writes it; no resample).

A run directory: veriscale.json (stage "verifier", `members`, the run config, the label counts,
`best_step` = the smallest of the members' kept steps (-1 when any member never improved),
`member_best_steps`, and `heldout`: the held-out metrics of the pessimistic score), metrics.jsonl
(every member's evaluations in turn, each tagged with its `member`), and member-0 ..
member-{K-1}, each a verifier run directory (body safetensors, value head safetensors, JSON).
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from veriscale.atomic import write_json_atomic, write_jsonl_atomic
from veriscale.config import to_dict
from veriscale.learn import samples as samples_
from veriscale.learn.verifier import Verifier, VerifierConfig, load_verifier, prefix_metrics, train_verifier
from veriscale.policy.base import META, read_meta
from veriscale.policy.text import HFConfig
from veriscale.tasks.base import Rollouts, Task, take


def member_dir(k: int) -> str:
    return f"member-{k}"


def combine(scores: torch.Tensor, pessimism: str, lcb_k: float) -> torch.Tensor:
    """(K, B, L) member scores -> (B, L) the ensemble's score (module docstring)."""
    if pessimism == "min":
        return scores.min(0).values
    mean = scores.mean(0)
    if pessimism == "lcb":
        return (mean - lcb_k * scores.std(0)).clamp(0.0, 1.0)
    return mean


class EnsembleVerifier:
    """K verifiers read as one: the same `score(prompts, rollouts)` and `policy` (the members
    share the base's tokens and prompt encoding) as a `Verifier`, so callers need no change."""

    def __init__(self, members: list[Verifier], pessimism: str = "min", lcb_k: float = 1.0):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members, self.pessimism, self.lcb_k = members, pessimism, lcb_k
        self.policy = members[0].policy

    @torch.no_grad()
    def score(self, prompts: Any, rollouts: Rollouts, batch_size: int = 64) -> torch.Tensor:
        """(B, L) pessimistic r_hat of every prefix h = 1..L (each member's `Verifier.score`)."""
        return combine(torch.stack([m.score(prompts, rollouts, batch_size) for m in self.members]),
                       self.pessimism, self.lcb_k)


def bootstrap(s: samples_.Samples, generator: torch.Generator) -> samples_.Samples:
    """`s` with its n training prompts drawn n times with replacement, each with all its r
    samples (rows i*r+j as before); the validation prompts and traces are unchanged."""
    n = len(s.rollouts) // s.r
    pick = torch.randint(n, (n,), generator=generator)  # (n,) prompt indices
    rows = (pick[:, None] * s.r + torch.arange(s.r)).flatten()  # (n*r,) their samples
    return replace(s, prompts=take(s.prompts, pick), rollouts=s.rollouts.take(rows), T=s.T[rows])


@torch.no_grad()
def ensemble_metrics(ens: EnsembleVerifier, task: Task, s: samples_.Samples, loss: str) -> dict:
    """`prefix_metrics` of the ensemble's (pessimistic) score on the validation traces."""
    ro = s.val_rollouts
    L = ro.tokens.shape[1]
    prompts = s.repeated("val")
    p = ens.score(prompts, ro)  # (N, L) probabilities; their logits feed the same metrics
    mask = torch.arange(L)[None] < ro.counts[:, None]
    return prefix_metrics(torch.logit(p, eps=1e-6), task.prefix_verdicts(prompts, ro).float(), mask, loss)


def train_ensemble(policy, task: Task, cfg: VerifierConfig, out: str | Path,
                   samples: samples_.Samples | None = None, meta: dict | None = None) -> Path:
    """`cfg.ensemble` runs of `train_verifier`, each on a fresh copy of `policy` (a member's body
    trains in place) and a bootstrap resample of the same labelled samples; writes `out`."""
    H = cfg.horizon or samples_.horizon_of(policy)
    if samples is None:
        samples = samples_.draw(policy, task, cfg.samples, cfg.n, H, cfg.data_seed, cfg.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    member_cfg = replace(cfg, ensemble=1, pessimism="none")
    runs, log = [], []
    for k in range(cfg.ensemble):
        g = torch.Generator().manual_seed(1000 * cfg.seed + k)
        d = train_verifier(copy.deepcopy(policy), task, member_cfg, out / member_dir(k), samples=bootstrap(samples, g),
                           meta={**(meta or {}), "member": k})
        runs.append(json.loads((d / META).read_text()))
        log += [{**json.loads(line), "member": k} for line in (d / "metrics.jsonl").read_text().splitlines() if line]
    ens = EnsembleVerifier([load_verifier(out / member_dir(k), task) for k in range(cfg.ensemble)], cfg.pessimism,
                           cfg.lcb_k)
    write_jsonl_atomic(out / "metrics.jsonl", log)
    steps = [r["best_step"] for r in runs]
    write_json_atomic(out / META, {"base": policy.spec, **(meta or {}), "stage": "verifier", "run": to_dict(cfg),
                                   "task": to_dict(task.cfg), "task_spec": task.name, "hard": runs[0]["hard"],
                                   "members": [member_dir(k) for k in range(cfg.ensemble)], "best_step": min(steps),
                                   "member_best_steps": steps, "steps_planned": runs[0]["steps_planned"],
                                   "horizon": H, "training_traces": len(samples.rollouts),
                                   "validation_traces": len(samples.val_rollouts),
                                   "heldout": ensemble_metrics(ens, task, samples, cfg.loss)})
    return out


def load_ensemble(run_dir: str | Path, meta: dict, task: Task | None = None,
                  hf: HFConfig | None = None) -> EnsembleVerifier:
    """The ensemble of a run directory written by `train_ensemble`: every member through
    `load_verifier` (which refuses a member trained on another task), combined as its run says."""
    run = meta["run"]
    return EnsembleVerifier([load_verifier(Path(run_dir) / m, task, hf) for m in meta["members"]],
                            run["pessimism"], run["lcb_k"])


def fit_verifier(policy, task: Task, cfg: VerifierConfig, out: str | Path,
                 samples: samples_.Samples | None = None, meta: dict | None = None) -> Path:
    """The verifier `cfg` asks for: one (`train_verifier`), or the ensemble of `cfg.ensemble` > 1."""
    if cfg.ensemble > 1:
        return train_ensemble(policy, task, cfg, out, samples, meta)
    return train_verifier(policy, task, cfg, out, samples=samples, meta=meta)


def open_verifier(run_dir: str | Path, task: Task | None = None, hf: HFConfig | None = None):
    """The verifier of a run directory, one or an ensemble, with `score(prompts, rollouts)`."""
    meta = read_meta(run_dir)
    if meta is not None and "members" in meta:
        return load_ensemble(run_dir, meta, task, hf)
    return load_verifier(run_dir, task, hf)
