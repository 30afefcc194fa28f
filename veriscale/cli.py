"""The `veriscale` command line. Each command validates its input before doing any work: a bad
config value or an unloadable policy prints one line naming the field or path and exits 2.

One spelling per concept, the same in every command: a policy is a spec (`--policy` / `--base`:
a run directory, hf:PATH or smollm2), a task is `--task` (planted, gym:NAME, file:PATH),
`--budgets` are token budgets H, `--prompts` held-out prompts, `--samples-per-prompt` traces
(or search pools) per prompt, `--sampler hf|vllm` samples a transformers policy, and
`--executor local|ray` runs a study's jobs.

Each command imports the layers it runs (torch, transformers, the study machinery) inside its own
body, so `veriscale --help` and a config error answer in a fraction of a second.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

from veriscale.config import ConfigError, apply_overrides, describe, from_dict, load_config, read_toml
from veriscale.study.commands import relearn, report, reproduce, results
from veriscale.tables import format_table

SAMPLERS = click.Choice(["hf", "vllm", "ct2"])


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def _budgets(text: str) -> list[int]:
    try:
        out = sorted({int(b) for b in text.split(",") if b.strip()})
    except ValueError:
        _fail(f"--budgets: expected comma-separated integers, got {text!r}")
    if not out or out[0] < 1:
        _fail(f"--budgets: budgets must be positive integers, got {text!r}")
    return out


def _default_budgets(horizon: int) -> list[int]:
    """8, 16, 32, ... below the horizon, and the horizon itself."""
    return sorted({b for b in (2**i for i in range(3, 20)) if b < horizon} | {horizon})


def budget_rows(metrics) -> list[dict]:
    return [{"H": m.budget, "J": f"{m.J_norm:.3f} [{m.J_norm_lo:.3f}, {m.J_norm_hi:.3f}]",
             "S": f"{m.success:.3f} [{m.success_lo:.3f}, {m.success_hi:.3f}]", "tokens": m.tokens, "n": m.n}
            for m in metrics]


BUDGET_COLUMNS = [("H", "H"), ("J", "J_H/H [95% CI]"), ("S", "success@H [95% CI]"), ("tokens", "tokens"),
                  ("n", "traces")]
EVAL_COLUMNS = [("method", "method"), ("H", "H"), ("J", "J_H/H [95% CI]"), ("S", "success@H [95% CI]"),
                ("tokens", "tokens"), ("verifier_calls", "verifier calls"), ("n", "n")]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """veriscale: verifier-free vs verifier-based scaling of test-time compute."""


for _cmd in (reproduce, results, report, relearn):
    main.add_command(_cmd)


# ---- policies and tasks ----------------------------------------------------------------------

def _policy(spec: str, flag: str, sampler: str = "hf", stages: tuple[str, ...] | None = None):
    """The policy of `spec`, or exit 2 with one line naming the flag and what is wrong."""
    from veriscale.policy.base import PolicyError
    from veriscale.policy.load import POLICY_STAGES, load_policy
    from veriscale.policy.vllm import BackendUnavailable

    try:
        return load_policy(spec, sampler=sampler, stages=stages or POLICY_STAGES)
    except (PolicyError, BackendUnavailable) as e:
        _fail(f"{flag}: {e}")


def _task(task: str | None, policy, overrides: tuple[str, ...] = ()):
    """The task named by --task; without it, the task a run directory records (a tiny GPT's own
    planted task, or the text task a learner was trained on, with its configuration). `overrides`
    (--task-set KEY=VALUE) change a text task's configuration (tasks/gym.py, tasks/files.py)."""
    from veriscale.policy.base import read_meta
    from veriscale.tasks.files import FilesConfig
    from veriscale.tasks.gym import GymConfig
    from veriscale.tasks.load import is_text, make_task

    if policy.kind == "gpt":
        if task not in (None, "planted"):
            _fail(f"--task: a tiny-GPT policy works on its own planted task, not {task!r}")
        if overrides:
            _fail("--task-set: a tiny-GPT policy's planted task is fixed by its run directory")
        return policy.task
    meta = (read_meta(policy.spec) or {}) if Path(policy.spec).is_dir() else {}
    spec = task or meta.get("task_spec")
    if spec is None:
        _fail("--task: required for a transformers policy (gym:NAME or file:PATH)")
    if not is_text(spec):
        _fail(f"--task: a transformers policy needs a text task (gym:NAME or file:PATH), not {spec!r}")
    own = meta.get("task") if meta.get("task_spec") == spec else None
    try:
        table = apply_overrides(own or {}, list(overrides))
        if spec.startswith("gym:"):
            return make_task(spec, gym=from_dict(GymConfig, table, "task-set "))
        return make_task(spec, files=from_dict(FilesConfig, table, "task-set "))
    except (ConfigError, ValueError, OSError) as e:
        _fail(f"--task: {e}")


# ---- train -------------------------------------------------------------------------------------

@main.group()
def train() -> None:
    """Train pi_b (pretrain) or a learner from any policy: sft (VF), verifier and rl (VB)."""


@train.command("pretrain")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML config (defaults are used for missing keys).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
@click.option("--budgets", default=None,
              help="Budgets of the evaluation table printed after training [default: 8, 16, ... up to the horizon].")
@click.option("--prompts", default=256, show_default=True, type=click.IntRange(min=1),
              help="Held-out prompts of that table.")
def pretrain_command(config_path: str | None, overrides: tuple[str, ...], budgets: str | None, prompts: int) -> None:
    """Pretrain the tiny-GPT base policy on planted-task teacher traces, then print its table."""
    from veriscale.evaluate import evaluate_policy
    from veriscale.learn.pretrain import PretrainConfig, pretrain

    try:
        cfg = load_config(PretrainConfig, config_path, list(overrides))
    except ConfigError as e:
        _fail(f"config: {e}")
    b = _budgets(budgets) if budgets else _default_budgets(cfg.task.horizon)
    if b[-1] > cfg.task.horizon:
        _fail(f"--budgets: {b[-1]} exceeds task.horizon={cfg.task.horizon}")
    out = pretrain(cfg)
    click.echo(f"wrote {out}")
    policy = _policy(str(out), "--out")
    metrics = evaluate_policy(policy, policy.task, policy.task.prompts("test", prompts, 0), b)
    click.echo(f"{prompts} held-out prompts, temperature 1.0, sampled once at H={b[-1]}")
    click.echo(format_table(budget_rows(metrics), BUDGET_COLUMNS))


def _learner_options(f):
    """--base/--task/--out/--config/--set/--threads, shared by every learner."""
    for opt in reversed([
        click.option("--base", "base", required=True,
                     help="The policy to train from: a run directory, hf:PATH or smollm2."),
        click.option("--task", "task", default=None,
                     help="planted (a tiny GPT's own task, the default), gym:NAME or file:PATH."),
        click.option("--task-set", "task_overrides", multiple=True, metavar="KEY=VALUE",
                     help="Set a text task's field (gym: max_digits=2, ...; file: test_share=0.2, ...)."),
        click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory to write."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                     help="TOML config, e.g. a preset of configs/ (defaults are used for missing keys)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field."),
    ]):
        f = opt(f)
    return f


def _prepare(cls, config_path, overrides, base, task, task_overrides, out):
    """Validated config, base policy and task, or exit 2 before anything is written."""
    try:
        cfg = load_config(cls, config_path, list(overrides))
    except ConfigError as e:
        _fail(f"config: {e}")
    if Path(out).exists() and any(Path(out).iterdir()):
        _fail(f"--out: {out} exists and is not empty")
    policy = _policy(base, "--base")
    return cfg, policy, _task(task, policy, task_overrides)


def _summary(out: Path) -> None:
    """The run directory and the logged record of the kept step (the best held-out evaluation
    when the learner keeps one, else the last step)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = json.loads((out / "veriscale.json").read_text()).get("best_step")
    rec = next((r for r in records if r["step"] == best), records[-1]) if records else {}
    click.echo(f"wrote {out}; kept step {rec.get('step')}: " + ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items() if k != "step"))


def _run(train_fn, *args, **kwargs) -> None:
    """Run a learner; a value it refuses (a missing horizon, too few traces) is one line, exit 2."""
    try:
        _summary(train_fn(*args, **kwargs))
    except ValueError as e:
        _fail(str(e))


@train.command("sft")
@_learner_options
def train_sft_command(config_path, overrides, base, task, task_overrides, out) -> None:
    """VF: SFT on n expert traces (veriscale/learn/sft.py)."""
    from veriscale.learn.sft import SFTConfig, train_sft

    cfg, policy, task_obj = _prepare(SFTConfig, config_path, overrides, base, task, task_overrides, out)
    _run(train_sft, policy, task_obj, cfg, out)


@train.command("verifier")
@_learner_options
def train_verifier_command(config_path, overrides, base, task, task_overrides, out) -> None:
    """VB: per-prefix verifier on labelled rollouts of pi_b, Algorithms 1-2 (veriscale/learn/verifier.py)."""
    from veriscale.learn.verifier import VerifierConfig, train_verifier

    cfg, policy, task_obj = _prepare(VerifierConfig, config_path, overrides, base, task, task_overrides, out)
    _run(train_verifier, policy, task_obj, cfg, out)


@train.command("rl")
@_learner_options
@click.option("--verifier", "verifier_dir", default=None, type=click.Path(file_okay=False),
              help="Verifier run directory (needed for reward=verifier).")
def train_rl_command(config_path, overrides, base, task, task_overrides, out, verifier_dir) -> None:
    """VB: RL with a group baseline and KL to pi_b, on the outcome, return or verifier reward (veriscale/learn/rl.py)."""
    from veriscale.learn.rl import RLConfig, train_rl

    cfg, policy, task_obj = _prepare(RLConfig, config_path, overrides, base, task, task_overrides, out)
    if cfg.reward == "verifier" and verifier_dir is None:
        _fail("--verifier: reward=verifier needs a verifier run directory")
    verifier = _verifier(verifier_dir, task_obj) if verifier_dir else None
    _run(train_rl, policy, task_obj, cfg, out, verifier=verifier)


def _verifier(path: str, task):
    from veriscale.learn.verifier import load_verifier
    from veriscale.policy.base import PolicyError


    try:
        return load_verifier(path, task)
    except PolicyError as e:
        _fail(f"--verifier: {e}")


# ---- evaluate ----------------------------------------------------------------------------------

@main.command()
@click.option("--policy", "policy_spec", required=True,
              help="The policy (the base policy of search methods): a run directory, hf:PATH or smollm2.")
@click.option("--task", default=None, help="planted, gym:NAME or file:PATH [default: the run's own task].")
@click.option("--task-set", "task_overrides", multiple=True, metavar="KEY=VALUE",
              help="Set a text task's field (gym: max_digits=2, ...; file: test_share=0.2, ...).")
@click.option("--method", "methods", multiple=True, default=("base",), show_default=True,
              help="base|expert|sft|rl|bon|maj|wmaj|oracle|early_stop; repeatable or comma-separated; "
                   "NAME=RUN_DIR evaluates that run's policy instead of --policy.")
@click.option("--verifier", "verifier_dir", default=None, type=click.Path(file_okay=False),
              help="Verifier run directory (bon, wmaj, early_stop).")
@click.option("--budgets", default="16,32,64,128", show_default=True, help="Comma-separated budgets H.")
@click.option("--prompts", default=256, show_default=True, type=click.IntRange(min=1), help="Held-out prompts.")
@click.option("--samples-per-prompt", "samples", default=1, show_default=True, type=click.IntRange(min=1),
              help="Independent problems per prompt (traces, or search pools).")
@click.option("--search-n", default=4, show_default=True, type=click.IntRange(min=1), help="N of best-of-N.")
@click.option("--accounting", default="shared", show_default=True, type=click.Choice(["shared", "per_sample"]),
              help="Best-of-N against H: the N samples share H (floor(H/N) tokens each, all charged), or "
                   "each sample gets H (the selected trace scored with J_H; N*H tokens drawn).")
@click.option("--force-budget", is_flag=True,
              help="Text policies: sample sequential methods once per budget with s1 budget forcing.")
@click.option("--threshold", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Verifier score at which early_stop stops.")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0.0))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--sampler", default="hf", show_default=True, type=SAMPLERS,
              help="Sampler of a transformers policy (vllm: veriscale[vllm] and a CUDA GPU; ct2: CTranslate2 on "
                   "CPU, veriscale[cpu]).")
def evaluate(policy_spec, task, task_overrides, methods, verifier_dir, budgets, prompts, samples, search_n, accounting, force_budget,
             threshold, temperature, seed, sampler) -> None:
    """One table of J_H/H and success@H (95% CIs), tokens and verifier calls per method and budget,
    all methods on the same held-out prompts, each sampled once at the largest budget."""
    from veriscale.evaluate import METHODS, evaluate_method
    from veriscale.policy.forcing import BudgetForcing
    from veriscale.search import NEEDS_VERIFIER

    b = _budgets(budgets)
    plan = []
    for item in (i.strip() for text in methods for i in text.split(",") if i.strip()):
        name, _, run = item.partition("=")
        if name not in METHODS:
            _fail(f"--method: {name!r} is not one of {', '.join(METHODS)}")
        plan.append((f"{name}:{Path(run).name}" if run else name, name, run or policy_spec))
    base = _policy(policy_spec, "--policy", sampler)
    task_obj = _task(task, base, task_overrides)
    if base.kind == "gpt" and b[-1] > task_obj.cfg.horizon:
        _fail(f"--budgets: {b[-1]} exceeds the policy's horizon {task_obj.cfg.horizon}")
    if force_budget and base.kind != "hf":
        _fail("--force-budget: budget forcing edits text decoding; the tiny GPT has no answer cue")
    if any(m in NEEDS_VERIFIER for _, m, _ in plan) and verifier_dir is None:
        _fail(f"--verifier: methods {', '.join(NEEDS_VERIFIER)} need a verifier run directory")
    if accounting == "shared" and any(m in ("bon", "maj", "wmaj", "oracle") for _, m, _ in plan) and b[0] < search_n:
        _fail(f"--budgets: best-of-{search_n} needs every budget >= {search_n}, got {b[0]}")
    verifier = _verifier(verifier_dir, task_obj) if verifier_dir else None
    test = task_obj.prompts("test", prompts, seed)
    rows = []
    for label, method, spec in plan:
        policy = base if spec == policy_spec else _policy(spec, "--method", sampler)
        forcing = BudgetForcing() if force_budget and method in ("base", "sft", "rl") else None
        try:
            recs = evaluate_method(method, policy, task_obj, test, b, verifier=verifier, samples=samples,
                                   n_search=search_n, temperature=temperature, seed=seed, threshold=threshold,
                                   accounting=accounting, forcing=forcing)
        except ValueError as e:
            _fail(f"{label}: {e}")
        rows += [{"method": label, "H": r["budget"], "n": r["n"], "tokens": r["tokens"],
                  "verifier_calls": r["verifier_calls"],
                  "J": f"{r['J_norm']:.3f} [{r['J_norm_lo']:.3f}, {r['J_norm_hi']:.3f}]",
                  "S": f"{r['success']:.3f} [{r['success_lo']:.3f}, {r['success_hi']:.3f}]"} for r in recs]
    click.echo(f"{task_obj.name}: {prompts} held-out prompts x {samples} problems, temperature {temperature}, "
               f"seed {seed}; search: N={search_n} samples, accounting {accounting} ("
               f"{'floor(H/N) tokens each' if accounting == 'shared' else 'H tokens each'}); "
               + ("sequential methods budget-forced per H" if force_budget else f"sampled once at H={b[-1]}"))
    click.echo(format_table(rows, EVAL_COLUMNS))


# ---- diagnose ----------------------------------------------------------------------------------

@main.command("diagnose")
@click.option("--policy", default=None, help="A run directory, hf:PATH (local transformers model) or smollm2.")
@click.option("--task", default=None, help="planted (default: the run's own task), gym:NAME or file:PATH.")
@click.option("--budget", type=click.IntRange(min=1), default=None, help="H: the token budget of every trace [64].")
@click.option("--samples-per-prompt", "samples", type=click.IntRange(min=2), default=None,
              help="M: traces per prompt [16].")
@click.option("--prompts", type=click.IntRange(min=2), default=None, help="N: prompts [64].")
@click.option("--out", default=None, help="Output directory [runs/diagnose/<policy>-<task>].")
@click.option("--vf-data", default=None, help="The data VF would clone, for the prediction of the VB - VF gap: "
                                               "expert (the planted task's expert) or a JSONL file of {\"T\": ...}.")
@click.option("--sampler", type=SAMPLERS, default=None,
              help="Sampler of a transformers policy [hf]; vllm needs veriscale[vllm] and a CUDA GPU, ct2 "
                   "(CTranslate2 on CPU) veriscale[cpu].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a field (margin=linear, hf.batch_size=32, gym.max_digits=2, ...).")
def diagnose_command(policy, task, budget, samples, prompts, out, vf_data, sampler, config_path, overrides) -> None:
    """Heterogeneity and anti-concentration of a base policy: JSON, PNGs, tables and a verdict."""
    import torch

    from veriscale.diagnose import DiagnoseConfig, default_out, diagnose, resolve, summary_tables, write_report
    from veriscale.policy.base import PolicyError
    from veriscale.policy.vllm import BackendUnavailable


    given = dict(policy=policy, task=task, budget=budget, samples=samples, prompts=prompts, out=out, sampler=sampler,
                 vf_data=vf_data)
    try:
        data = apply_overrides(read_toml(config_path) if config_path else {}, list(overrides))
        data.update({k: v for k, v in given.items() if v is not None})
        cfg = from_dict(DiagnoseConfig, data)
        if not cfg.policy:
            raise ConfigError("policy: required (--policy RUN_DIR|hf:PATH|smollm2)")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        sampler_obj, task_obj = resolve(cfg)
    except ConfigError as e:
        _fail(f"config: {e}")
    except (PolicyError, BackendUnavailable, ValueError) as e:
        _fail(str(e))
    try:
        s = diagnose(sampler_obj, task_obj, cfg)
    except ConfigError as e:
        _fail(f"config: {e}")
    path = write_report(s, Path(cfg.out) if cfg.out else default_out(cfg))
    click.echo(f"{cfg.policy} on {s['task']} [{s['source']}]: N={cfg.prompts} prompts x M={cfg.samples} traces, "
               f"H={cfg.budget}, temperature {cfg.temperature}: {s['tokens']} tokens in {s['sample_seconds']:.0f} s")
    for rows, columns in summary_tables(s):
        click.echo(format_table(rows, columns) + "\n")
    click.echo(f"verdict: {s['verdict']}")
    if "prediction" in s:
        click.echo(f"prediction (VF data {cfg.vf_data}, {s['vf_data']['traces']} traces): {s['prediction']['text']}")
    click.echo(f"wrote {path} and sigma_hist.png, anticoncentration.png, pass_rate_hist.png beside it")


# ---- config and bench --------------------------------------------------------------------------

CONFIGS = {
    "pretrain": "veriscale.learn.pretrain:PretrainConfig",
    "sft": "veriscale.learn.sft:SFTConfig",
    "verifier": "veriscale.learn.verifier:VerifierConfig",
    "rl": "veriscale.learn.rl:RLConfig",
    "study": "veriscale.study.spec:StudyConfig",
    "diagnose": "veriscale.diagnose:DiagnoseConfig",
}


@main.command("config")
@click.argument("kind", type=click.Choice(sorted(CONFIGS)))
@click.option("--preset", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Show the values a preset TOML (e.g. configs/llm/sft.toml) gives, not the defaults.")
def show_config(kind: str, preset: str | None) -> None:
    """List every field of a config: dotted key, type, default (or preset value) and meaning."""
    module, name = CONFIGS[kind].split(":")
    cls = getattr(importlib.import_module(module), name)
    try:
        values = load_config(cls, preset) if preset else None
    except ConfigError as e:
        _fail(f"config: {e}")
    rows = [{"key": k, "type": t, "default": repr(d), "help": h} for k, t, d, h in describe(cls, defaults=values)]
    click.echo(format_table(rows, [("key", "key"), ("type", "type"), ("default", "default" if values is None
                                                                        else "value"), ("help", "meaning")]))


@main.group()
def bench() -> None:
    """Speed benchmarks (figures go to BENCHMARKS.md)."""


@bench.command("engine")
@click.option("--batches", default="64,256", show_default=True, help="Batch sizes to time.")
@click.option("--new-tokens", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0),
              help="torch CPU threads (0 = torch's default).")
def bench_engine(batches: str, new_tokens: int, repeats: int, threads: int) -> None:
    """Engine vs full-recompute reference vs transformers generate; training tokens/s and MFU."""
    import torch

    from veriscale.bench import run_engine_bench


    if threads:
        torch.set_num_threads(threads)
    click.echo(run_engine_bench([int(b) for b in batches.split(",")], new_tokens, repeats))


if __name__ == "__main__":
    main()
