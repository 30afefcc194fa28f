"""Base-model diagnostics: heterogeneity and anti-concentration (SPEC §1), with bootstrap CIs.

Will a verifier pay off for this policy on this task? The paper's answer: yes when the policy is
heterogeneous (its returns spread widely) and anti-concentrated (a good share of its traces score
clearly above its mean). For N prompts x, M traces each at budget H:
- T: first-success index of each trace (the task's checker); R_H = (H - T + 1) 1{T <= H};
- sigma(x) = sd of R_H over the M traces (unbiased variance); overall sigma = sqrt(mean_x sigma(x)^2),
  reported as sigma/H; beside it the same over correct traces only (prompts with >= 2 successes),
  which isolates the spread of finishing times from the success/failure spread;
- c_x(eps) = share of traces with R_H >= mean_x R_H + margin(eps) sigma(x), margin(eps) = sqrt(eps)
  (`margin = "sqrt"`) or eps ("linear"). A prompt whose traces all score the same (sigma(x) = 0) gets
  c_x = 0: nothing there scores above its mean, so a verifier has nothing to select (a literal
  ">=" would give 1 and count every all-fail prompt as anti-concentrated);
- pass rate = share of traces with T <= H; the share of size-G groups with all-equal 0/1 rewards
  (exact hypergeometric average over all G-subsets of the M traces: groups that give GRPO-style
  RL no signal);
- 95% percentile-bootstrap CIs over prompts; the summary (sigma/H, mean c(eps), share of prompts
  with c_x(eps) >= c0) and a one-line verdict, with thresholds as knobs (our choices, documented).

Run: `veriscale diagnose --policy smollm2 --task gym:basic_arithmetic --budget 64 --samples 16
--prompts 64 --out runs/diag-smollm2` writes diagnosis.json and three PNGs and prints the tables.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from veriscale.atomic import write_json_atomic
from veriscale.config import ConfigError, knob
from veriscale.policy import SamplerName
from veriscale.policy.load import load_policy
from veriscale.policy.text import HFConfig
from veriscale.rewards import returns
from veriscale.tasks.base import Sampler, Task, repeat_each
from veriscale.tasks.files import FilesConfig
from veriscale.tasks.gym import GymConfig
from veriscale.tasks.load import is_text, make_task


@dataclass
class DiagnoseConfig:
    policy: str = knob("", "RUN_DIR (tiny GPT run directory), hf:PATH (local transformers model) or smollm2")
    task: str = knob("planted", "planted (the run's own task), gym:NAME (reasoning-gym) or file:PATH (JSONL/Parquet)")
    budget: int = knob(64, "H: token budget of every trace", min=1)
    samples: int = knob(16, "M: traces per prompt", min=2)
    prompts: int = knob(64, "N: prompts", min=2)
    split: Literal["train", "test"] = knob("test", "which split the prompts come from")
    temperature: float = knob(1.0, "sampling temperature", min=0.0)
    seed: int = knob(0, "seed of the prompts, the sampling and the bootstrap", min=0)
    eps: list[float] = knob([0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0], "grid of margins eps for c_x(eps)", min=0.0)
    margin: Literal["sqrt", "linear"] = knob("sqrt", "margin(eps) in c_x(eps): sqrt(eps) or eps (form unknown; ours)")
    eps_ref: float = knob(0.25, "eps at which the verdict reads anti-concentration (ours)", min=0.0)
    c0: float = knob(0.1, "a prompt is anti-concentrated when c_x(eps_ref) >= c0 (ours)", min=0.0, max=1.0)
    group_size: int = knob(0, "G: group size for the share of all-equal-reward groups (0 = min(8, samples))",
                           min=0)
    bootstrap: int = knob(1000, "bootstrap resamples of the prompts", min=10)
    sigma_min: float = knob(0.05, "verdict: heterogeneous when sigma/H >= this (ours)", min=0.0)
    share_min: float = knob(0.5, "verdict: anti-concentrated when this share of prompts has c_x(eps_ref) >= c0 "
                                 "(ours)", min=0.0, max=1.0)
    pass_min: float = knob(0.02, "verdict: below this pass rate a verifier has almost nothing to select (ours)",
                           min=0.0, max=1.0)
    threads: int = knob(0, "torch CPU threads (0 = torch's default)", min=0)
    out: str = knob("", "output directory ('' = runs/diagnose/<policy>-<task>)")
    sampler: SamplerName = knob("hf", "text sampler: transformers, vLLM (GPU; veriscale[vllm]) or "
                                                 "CTranslate2 (CPU; veriscale[cpu])")
    hf: HFConfig = field(default_factory=HFConfig)
    gym: GymConfig = field(default_factory=GymConfig)
    files: FilesConfig = field(default_factory=FilesConfig)

    def __post_init__(self) -> None:
        if self.eps_ref not in self.eps:
            raise ConfigError(f"eps_ref: {self.eps_ref} is not in the eps grid {self.eps}")
        if self.group_size == 0:  # not set: follow samples, so `--samples 2` works without `--set group_size=2`
            self.group_size = min(8, self.samples)
        if self.group_size < 2:
            raise ConfigError(f"group_size: {self.group_size} is below 2 (0 = min(8, samples))")
        if self.group_size > self.samples:
            raise ConfigError(f"group_size: {self.group_size} exceeds samples={self.samples}")


# ---- estimators (pure functions of the (N, M) matrix of T) ------------------------------------
def margin_of(eps: torch.Tensor, form: str) -> torch.Tensor:
    return eps.sqrt() if form == "sqrt" else eps


def per_prompt(T: torch.Tensor, H: int, eps: list[float], form: str, group_size: int) -> dict[str, torch.Tensor]:
    """Per-prompt statistics of (N, M) first-success indices at budget H.

    Returns (N,) pass, mean, sigma, sigma_correct, all_equal and (N, E) c, all float64.
    """
    R = returns(T.flatten(), H).view(T.shape)  # (N, M)
    mean, sigma = R.mean(1), R.std(1, unbiased=True)  # (N,)
    thr = mean[:, None] + margin_of(torch.tensor(eps, dtype=torch.float64), form)[None] * sigma[:, None]  # (N, E)
    above = R[:, :, None] >= thr[:, None, :] - 1e-9 * (1 + thr.abs()[:, None, :])  # (N, M, E); float slack
    c = torch.where(sigma[:, None] > 0, above.double().mean(1), 0.0)
    M, ok = T.shape[1], T <= H  # ok: (N, M)
    k = ok.sum(1)  # (N,) successes
    # Spread of the correct traces alone (NaN below 2 successes): length heterogeneity without
    # the success/failure part of sigma(x).
    mean_ok = torch.where(ok, R, 0.0).sum(1) / k.clamp(min=1)
    var_ok = torch.where(ok, (R - mean_ok[:, None]) ** 2, 0.0).sum(1) / (k - 1).clamp(min=1)
    sigma_ok = torch.where(k >= 2, var_ok.sqrt(), torch.nan)
    equal = [(math.comb(s, group_size) + math.comb(M - s, group_size)) / math.comb(M, group_size) for s in k.tolist()]
    return {"pass": ok.double().mean(1), "mean": mean, "sigma": sigma, "c": c, "sigma_correct": sigma_ok,
            "all_equal": torch.tensor(equal, dtype=torch.float64)}


def bootstrap_ci(values: torch.Tensor, n_boot: int, seed: int, reduce=lambda m: m) -> dict[str, Any]:
    """Point estimate and 95% percentile-bootstrap CI over prompts of reduce(mean over prompts).

    values: (N,) or (N, E) per-prompt values; returns floats, or lists of E floats.
    """
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(values.shape[0], (n_boot, values.shape[0]), generator=g)  # (B, N)
    boots = reduce(values[idx].mean(1))  # (B,) or (B, E)
    lo, hi = torch.quantile(boots, torch.tensor([0.025, 0.975], dtype=boots.dtype), dim=0)
    return {"value": reduce(values.mean(0)).tolist(), "lo": lo.tolist(), "hi": hi.tolist()}


def summarize(T: torch.Tensor, cfg: DiagnoseConfig) -> dict[str, Any]:
    """Summary dict (JSON-ready) of (N, M) first-success indices; see the module docstring."""
    H, b, s = cfg.budget, cfg.bootstrap, cfg.seed
    st = per_prompt(T, H, cfg.eps, cfg.margin, cfg.group_size)
    anti = (st["c"] >= cfg.c0).double()  # (N, E)

    def rms_over_H(mean_var: torch.Tensor) -> torch.Tensor:  # overall sigma = sqrt of the mean variance
        return mean_var.sqrt() / H

    some_ok = ~st["sigma_correct"].isnan()
    out = {
        "sigma_over_H": bootstrap_ci(st["sigma"] ** 2, b, s, reduce=rms_over_H),
        "sigma_correct_over_H": bootstrap_ci(st["sigma_correct"][some_ok] ** 2, b, s, reduce=rms_over_H)
        if some_ok.sum() >= 2 else None,
        "pass_rate": bootstrap_ci(st["pass"], b, s),
        "J_over_H": bootstrap_ci(st["mean"] / H, b, s),
        "mean_c": bootstrap_ci(st["c"], b, s),
        "share_anti": bootstrap_ci(anti, b, s),
        "all_equal_share": bootstrap_ci(st["all_equal"], b, s),
        "degenerate_share": float((st["sigma"] == 0).double().mean()),
    }
    out["verdict"] = verdict(out, cfg)
    out["per_prompt"] = {"pass": st["pass"].tolist(), "sigma": st["sigma"].tolist(), "mean": st["mean"].tolist(),
                         "sigma_correct": [None if math.isnan(v) else v for v in st["sigma_correct"].tolist()],
                         "c": st["c"].tolist(), "T": [[t if t <= H else None for t in row] for row in T.tolist()]}
    return out


def verdict(s: dict[str, Any], cfg: DiagnoseConfig) -> str:
    """One line: YES / NO / INCONCLUSIVE that verifier-based training pays off, and why (CIs vs thresholds)."""
    e = cfg.eps.index(cfg.eps_ref)
    p, sig, a = s["pass_rate"], s["sigma_over_H"], {k: v[e] for k, v in s["share_anti"].items()}
    P = f"pass rate {p['value']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]"
    S = f"sigma/H {sig['value']:.3f} [{sig['lo']:.3f}, {sig['hi']:.3f}]"
    A = f"{a['value']:.0%} [{a['lo']:.0%}, {a['hi']:.0%}] of prompts have c_x({cfg.eps_ref:g}) >= {cfg.c0:g}"
    if p["hi"] < cfg.pass_min:
        return f"NO: the policy almost never succeeds ({P} < {cfg.pass_min:g}); a verifier has nothing to select " \
               f"— warm it up (SFT) first"
    if sig["hi"] < cfg.sigma_min:
        return f"NO: homogeneous ({S} < {cfg.sigma_min:g}); cloning good traces loses little, VB gains little"
    if a["hi"] < cfg.share_min:
        return f"NO: not anti-concentrated (only {A}, need {cfg.share_min:.0%}); few traces beat the mean clearly"
    if p["lo"] >= cfg.pass_min and sig["lo"] >= cfg.sigma_min and a["lo"] >= cfg.share_min:
        return f"YES: heterogeneous ({S} >= {cfg.sigma_min:g}) and anti-concentrated ({A}); verifier-based " \
               f"training (RL/search) is expected to beat distillation, by more as H grows"
    return f"INCONCLUSIVE: {S}, {A}, {P}: the CIs straddle the thresholds; raise --prompts/--samples"


# ---- running: resolve the policy and task, sample, write the report ----------------------------
def resolve(cfg: DiagnoseConfig) -> tuple[Any, Task]:
    """(policy, task) named by cfg.policy and cfg.task; a text task is checked before a model loads."""
    text = is_text(cfg.task)
    if not text and (cfg.policy == "smollm2" or cfg.policy.startswith("hf:")):
        raise ConfigError(f"task: a transformers policy needs a text task (gym:NAME or file:PATH), not {cfg.task!r}")
    task = make_task(cfg.task, gym=cfg.gym, files=cfg.files) if text else None
    policy = load_policy(cfg.policy, hf=cfg.hf, sampler=cfg.sampler)
    if policy.task is not None:
        if text:
            raise ConfigError(f"task: a tiny-GPT run directory diagnoses its own {policy.task.name} task, "
                              f"not {cfg.task!r}")
        task = policy.task
    elif not text:
        raise ConfigError(f"task: a transformers policy needs a text task (gym:NAME or file:PATH), not {cfg.task!r}")
    if policy.horizon is not None and cfg.budget > policy.horizon:
        raise ConfigError(f"budget: {cfg.budget} exceeds the policy's horizon {policy.horizon}")
    return policy, task


def diagnose(sampler: Sampler, task: Task, cfg: DiagnoseConfig) -> dict[str, Any]:
    """Sample M traces for each of N prompts at budget H, check them, summarise."""
    prompts = task.prompts(cfg.split, cfg.prompts, cfg.seed)
    rows = repeat_each(prompts, cfg.samples)  # N*M prompts, the M samples of a prompt adjacent
    start = time.perf_counter()
    rollouts = sampler.sample(rows, cfg.budget, temperature=cfg.temperature, seed=cfg.seed)
    seconds = time.perf_counter() - start
    T = task.check(rows, rollouts).view(cfg.prompts, cfg.samples)
    out = {"policy": cfg.policy, "task": task.name, "source": getattr(task, "source", "planted (synthetic)"),
           "budget": cfg.budget, "samples": cfg.samples, "prompts": cfg.prompts, "split": cfg.split,
           "temperature": cfg.temperature, "seed": cfg.seed, "margin": cfg.margin, "eps": cfg.eps,
           "eps_ref": cfg.eps_ref, "c0": cfg.c0, "group_size": cfg.group_size,
           "sample_seconds": seconds, "tokens": int(rollouts.counts.sum()),
           "prompt_text": [p.text if hasattr(p, "text") else " ".join(map(str, p.tolist())) for p in prompts]}
    out.update(summarize(T, cfg))
    if rollouts.texts is not None:  # one example trace per prompt, for reading the report
        out["per_prompt"]["example"] = rollouts.texts[::cfg.samples]
    return out


def default_out(cfg: DiagnoseConfig) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(cfg.policy).name}-{cfg.task}").strip("_")
    return Path("runs") / "diagnose" / slug


def write_report(summary: dict[str, Any], out: Path) -> Path:
    """Write diagnosis.json (atomically) and the PNGs into `out`; returns the JSON path."""

    out.mkdir(parents=True, exist_ok=True)
    path = out / "diagnosis.json"
    write_json_atomic(path, summary)
    plot_report(path)
    return path


def plot_report(path: str | Path) -> list[Path]:
    """The three figures from a stored diagnosis.json (re-runnable): sigma(x)/H and pass-rate
    histograms, and mean c(eps) and the share of prompts with c_x(eps) >= c0 against eps, with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    s = json.loads(path.read_text())
    title = f"{Path(s['policy']).name} on {s['task']}: N={s['prompts']}, M={s['samples']}, H={s['budget']}"
    pp, H, files = s["per_prompt"], s["budget"], []

    def save(fig, name: str) -> None:
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path.parent / name, dpi=110)
        plt.close(fig)
        files.append(path.parent / name)

    fig, ax = plt.subplots(figsize=(5, 3.4))
    sig = [v / H for v in pp["sigma"]]
    ax.hist(sig, bins=20, range=(0, max(0.5, *sig)), color="tab:blue")
    ax.axvline(s["sigma_over_H"]["value"], color="k", ls="--", label="overall σ/H")
    ax.set(xlabel="σ(x) / H", ylabel="prompts")
    ax.legend()
    save(fig, "sigma_hist.png")

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for key, label, color in (("mean_c", "mean c_x(ε)", "tab:green"),
                              ("share_anti", f"share with c_x(ε) ≥ {s['c0']:g}", "tab:orange")):
        ax.plot(s["eps"], s[key]["value"], marker="o", color=color, label=label)
        ax.fill_between(s["eps"], s[key]["lo"], s[key]["hi"], color=color, alpha=0.2)
    ax.set(xlabel=f"ε (margin = {'√ε' if s['margin'] == 'sqrt' else 'ε'} · σ(x))", ylim=(-0.03, 1.08))
    ax.legend(fontsize=8)
    save(fig, "anticoncentration.png")

    fig, ax = plt.subplots(figsize=(5, 3.4))
    M = s["samples"]  # pass rates are k/M: one bin centred on each value when there are few
    ax.hist(pp["pass"], bins=[(k - 0.5) / M for k in range(M + 2)] if M <= 20 else 20, color="tab:purple")
    ax.set(xlabel="per-prompt pass rate", ylabel="prompts")
    save(fig, "pass_rate_hist.png")
    return files


def summary_tables(s: dict[str, Any]) -> list[tuple[list[dict], list[tuple[str, str]]]]:
    """(rows, columns) of the two printed tables: headline figures, and c(eps) over the grid."""
    def ci(d, i=None):
        v, lo, hi = (d[k] if i is None else d[k][i] for k in ("value", "lo", "hi"))
        return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"

    sc = s["sigma_correct_over_H"]
    head = [{"m": "sigma / H", "v": ci(s["sigma_over_H"])},
            {"m": "sigma / H, correct traces only", "v": ci(sc) if sc else "n/a (< 2 prompts with 2 successes)"},
            {"m": "pass rate", "v": ci(s["pass_rate"])},
            {"m": "J_H / H", "v": ci(s["J_over_H"])},
            {"m": f"all-equal groups (G={s['group_size']})", "v": ci(s["all_equal_share"])},
            {"m": "prompts with sigma(x) = 0", "v": f"{s['degenerate_share']:.3f}"}]
    grid = [{"eps": f"{e:g}", "c": ci(s["mean_c"], i), "share": ci(s["share_anti"], i)} for i, e in enumerate(s["eps"])]
    return [(head, [("m", "figure"), ("v", "value [95% CI]")]),
            (grid, [("eps", "eps"), ("c", "mean c(eps) [95% CI]"), ("share", f"share c_x >= {s['c0']:g} [95% CI]")])]
