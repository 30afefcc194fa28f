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
- sigma over prompts also as the median of sigma(x)/H (how a published review of the paper reads
  its sigma), and c(eps) also as a low quantile over prompts (`q_low`: the paper assumes
  anti-concentration uniformly over prompts, not on average);
- 95% percentile-bootstrap CIs over prompts; the summary (sigma/H, mean c(eps), share of prompts
  with c_x(eps) >= c0) and a one-line verdict, with thresholds as knobs (our choices, documented).
  A pass rate whose CI reaches below `pass_min` gets "CANNOT JUDGE": with almost no successes every
  return is 0, so sigma and c say nothing about the policy;
- with `--vf-data` (the data VF would clone: `expert`, the planted task's expert process, or a
  JSONL file of checked traces, one {"T": first-success index or null} per line, e.g. a
  samples.jsonl) its return and spread too, and the prediction of veriscale/predict.py: the sign of
  the VB - VF gap at H and its growth from H/8 to H, with intervals.

Run: `veriscale diagnose --policy smollm2 --task gym:basic_arithmetic --budget 64 --samples 16
--prompts 64 --out runs/diag-smollm2` writes diagnosis.json and three PNGs and prints the tables;
`veriscale diagnose --policy runs/base --vf-data expert` adds the prediction (docs/diagnostics.md).
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
from veriscale.predict import GROWTH_WORDS, SIGN_WORDS, from_traces
from veriscale.rewards import returns
from veriscale.tasks.base import NEVER, Sampler, Task, repeat_each
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
    pass_min: float = knob(0.02, "verdict: a pass rate whose CI reaches below this is too low to judge (ours)",
                           min=0.0, max=1.0)
    q_low: float = knob(0.1, "low quantile over prompts reported beside mean c(eps) (ours)", min=0.0, max=1.0)
    vf_data: str = knob("", "data VF would clone, for the prediction: '' (none), expert (the planted task's expert "
                            "process) or PATH (JSONL of checked traces: one {\"T\": index or null} per line)")
    vf_n: int = knob(128, "prediction: training prompts n of the VF learner (its loss ~ sigma_data sqrt(kappa/n))",
                     min=1)
    kappa: float = knob(1.0, "prediction: log|Pi| in the VF loss sigma_data sqrt(kappa/n) (ours)", min=0.0)
    samples_per_problem: int = knob(4, "prediction: N samples a VB search selects from (ours)", min=1)
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


def bootstrap_ci(values: torch.Tensor, n_boot: int, seed: int, reduce=lambda m: m,
                 over_prompts=lambda v, dim: v.mean(dim)) -> dict[str, Any]:
    """Point estimate and 95% percentile-bootstrap CI over prompts of reduce(over_prompts(values)):
    the mean over prompts by default, or any statistic along the prompt dimension (a quantile).

    values: (N,) or (N, E) per-prompt values; returns floats, or lists of E floats.
    """
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(values.shape[0], (n_boot, values.shape[0]), generator=g)  # (B, N)
    boots = reduce(over_prompts(values[idx], 1))  # (B,) or (B, E)
    lo, hi = torch.quantile(boots, torch.tensor([0.025, 0.975], dtype=boots.dtype), dim=0)
    return {"value": reduce(over_prompts(values, 0)).tolist(), "lo": lo.tolist(), "hi": hi.tolist()}


def quantile(q: float):
    """over_prompts of bootstrap_ci: the q-quantile along the prompt dimension."""
    return lambda v, dim: v.quantile(q, dim=dim)


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
        "sigma_median_over_H": bootstrap_ci(st["sigma"] / H, b, s, over_prompts=quantile(0.5)),
        "sigma_correct_over_H": bootstrap_ci(st["sigma_correct"][some_ok] ** 2, b, s, reduce=rms_over_H)
        if some_ok.sum() >= 2 else None,
        "pass_rate": bootstrap_ci(st["pass"], b, s),
        "J_over_H": bootstrap_ci(st["mean"] / H, b, s),
        "mean_c": bootstrap_ci(st["c"], b, s),
        "low_c": bootstrap_ci(st["c"], b, s, over_prompts=quantile(cfg.q_low)),
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
    """One line on the base side of the theory's condition: CANNOT JUDGE / NO / YES / INCONCLUSIVE, and
    why (CIs against thresholds). Whether VB beats VF also needs the data VF clones: `prediction`."""
    e = cfg.eps.index(cfg.eps_ref)
    p, sig, a = s["pass_rate"], s["sigma_over_H"], {k: v[e] for k, v in s["share_anti"].items()}
    P = f"pass rate {p['value']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]"
    S = f"sigma/H {sig['value']:.3f} [{sig['lo']:.3f}, {sig['hi']:.3f}]"
    A = f"{a['value']:.0%} [{a['lo']:.0%}, {a['hi']:.0%}] of prompts have c_x({cfg.eps_ref:g}) >= {cfg.c0:g}"
    if p["lo"] < cfg.pass_min:  # sigma and c of a policy that almost never succeeds say nothing about it
        return f"CANNOT JUDGE: pass rate too low to judge ({P}, reaching below {cfg.pass_min:g}); the policy " \
               f"almost never succeeds, so a verifier has little to select — warm it up (SFT) or raise H"
    if sig["hi"] < cfg.sigma_min:
        return f"NO: homogeneous ({S} < {cfg.sigma_min:g}); cloning good traces loses little, VB gains little"
    if a["hi"] < cfg.share_min:
        return f"NO: not anti-concentrated (only {A}, need {cfg.share_min:.0%}); few traces beat the mean clearly"
    if p["lo"] >= cfg.pass_min and sig["lo"] >= cfg.sigma_min and a["lo"] >= cfg.share_min:
        return f"YES: heterogeneous ({S} >= {cfg.sigma_min:g}) and anti-concentrated ({A}): the base side of " \
               f"the theory's condition holds; whether VB beats VF also depends on the data VF clones (--vf-data)"
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
    T_vf = vf_traces(cfg, task, prompts) if cfg.vf_data else None  # a bad file fails before any sampling
    rows = repeat_each(prompts, cfg.samples)  # N*M prompts, the M samples of a prompt adjacent
    start = time.perf_counter()
    rollouts = sampler.sample(rows, cfg.budget, temperature=cfg.temperature, seed=cfg.seed)
    seconds = time.perf_counter() - start
    T = task.check(rows, rollouts).view(cfg.prompts, cfg.samples)
    out = {"policy": cfg.policy, "task": task.name, "source": getattr(task, "source", "planted (synthetic)"),
           "budget": cfg.budget, "samples": cfg.samples, "prompts": cfg.prompts, "split": cfg.split,
           "temperature": cfg.temperature, "seed": cfg.seed, "margin": cfg.margin, "eps": cfg.eps,
           "eps_ref": cfg.eps_ref, "c0": cfg.c0, "q_low": cfg.q_low, "group_size": cfg.group_size,
           "sample_seconds": seconds, "tokens": int(rollouts.counts.sum()),
           "prompt_text": [p.text if hasattr(p, "text") else " ".join(map(str, p.tolist())) for p in prompts]}
    out.update(summarize(T, cfg))
    if T_vf is not None:
        out["vf_data"] = {"source": cfg.vf_data, "traces": len(T_vf),
                          "pass_rate": float((T_vf <= cfg.budget).double().mean())}
        out["prediction"] = prediction(T, T_vf, out, cfg)
    if rollouts.texts is not None:  # one example trace per prompt, for reading the report
        out["per_prompt"]["example"] = rollouts.texts[::cfg.samples]
    return out


def vf_traces(cfg: DiagnoseConfig, task: Task, prompts: Any) -> torch.Tensor:
    """(K,) first-success indices of the data VF would clone: the planted task's expert process on
    the diagnosed prompts (M traces each), or a JSONL file's {"T": index or null} rows."""
    if cfg.vf_data == "expert":
        if not hasattr(task, "expert"):
            raise ConfigError("vf_data: 'expert' is the planted task's expert process; give a JSONL file instead")
        rows = repeat_each(prompts, cfg.samples)
        return task.check(rows, task.expert(rows, torch.Generator().manual_seed(cfg.seed), budget=cfg.budget))
    path = Path(cfg.vf_data)
    try:
        T = [json.loads(line).get("T") for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"vf_data: cannot read {path} as JSONL rows with a T field: {e}") from e
    if not T or not all(t is None or isinstance(t, int) for t in T):
        raise ConfigError(f"vf_data: {path} needs rows whose T is a first-success index or null")
    return torch.tensor([NEVER if t is None else t for t in T], dtype=torch.long)


def prediction(T: torch.Tensor, T_vf: torch.Tensor, s: dict[str, Any], cfg: DiagnoseConfig) -> dict[str, Any]:
    """veriscale/predict.py's prediction from the base's T, the VF data's and the base's c(eps_ref)."""
    e = cfg.eps.index(cfg.eps_ref)
    c = {k: s["mean_c"][k][e] for k in ("value", "lo", "hi")}
    margin = float(margin_of(torch.tensor(cfg.eps_ref), cfg.margin))
    p = from_traces(T, T_vf, c, cfg.budget, n=cfg.vf_n, N=cfg.samples_per_problem, margin=margin, kappa=cfg.kappa,
                    n_boot=cfg.bootstrap, seed=cfg.seed)
    g, gr = p["gaps"][-1], p["growth"]
    growth = f"{GROWTH_WORDS[p['growth_sign']]} ({gr['value']:.1f} [{gr['lo']:.1f}, {gr['hi']:.1f}] tokens from " \
             f"H = {p['gaps'][0]['H']})" if gr else "one budget: no growth"
    if s["verdict"].startswith("CANNOT JUDGE"):
        text = "CANNOT JUDGE: the base's pass rate is too low to predict from"
    else:
        text = f"{SIGN_WORDS[p['sign']]} at H = {cfg.budget}: predicted J(VB) - J(VF) = {g['value']:.1f} " \
               f"[{g['lo']:.1f}, {g['hi']:.1f}] tokens; the gap {growth}"
    return {**p, "text": text}


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
    e = s["eps"].index(s["eps_ref"])
    head = [{"m": "sigma / H (root-mean-square over prompts)", "v": ci(s["sigma_over_H"])},
            {"m": "sigma / H (median over prompts)", "v": ci(s["sigma_median_over_H"])},
            {"m": "sigma / H, correct traces only", "v": ci(sc) if sc else "n/a (< 2 prompts with 2 successes)"},
            {"m": "pass rate", "v": ci(s["pass_rate"])},
            {"m": "J_H / H", "v": ci(s["J_over_H"])},
            {"m": f"all-equal groups (G={s['group_size']})", "v": ci(s["all_equal_share"])},
            {"m": "prompts with sigma(x) = 0", "v": f"{s['degenerate_share']:.3f}"},
            {"m": f"c(eps = {s['eps_ref']:g}): mean over prompts", "v": ci(s["mean_c"], e)},
            {"m": f"c(eps = {s['eps_ref']:g}): {s['q_low']:g}-quantile over prompts", "v": ci(s["low_c"], e)}]
    for p in (s.get("prediction") or {}).get("points", []):
        head.append({"m": f"H = {p['H']}: J/H base | VF data, pooled sd/H base | VF data",
                     "v": " | ".join(f"{p[k]['value'] / p['H']:.3f}" for k in ("base_J", "vf_J", "base_sigma",
                                                                                "vf_sigma"))})
    grid = [{"eps": f"{e:g}", "c": ci(s["mean_c"], i), "share": ci(s["share_anti"], i)} for i, e in enumerate(s["eps"])]
    return [(head, [("m", "figure"), ("v", "value [95% CI]")]),
            (grid, [("eps", "eps"), ("c", "mean c(eps) [95% CI]"), ("share", f"share c_x >= {s['c0']:g} [95% CI]")])]
