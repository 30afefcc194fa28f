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
from pathlib import Path

import click

from veriscale.cli_checks import (FiniteRange, Main, check_supply, fit_prompts, given_keys, own_horizon,
                                  prepare_out)
from veriscale.config import ConfigError, apply_overrides, describe, from_dict, load_config, read_toml
from veriscale.cli_inputs import (cli_task, cli_verifier, default_budgets, hf_settings, load_cli_policy, parse_budgets,
                                  policy_options, with_threads)
from veriscale.console import fail, run_summary
from veriscale.policy import SAMPLERS
from veriscale.study.commands import relearn, report, reproduce, results
from veriscale.tables import format_table

SAMPLER_CHOICE = click.Choice(SAMPLERS)


def budget_rows(metrics: list[dict]) -> list[dict]:
    """Table rows of metrics rows (`rewards.BudgetMetrics` fields): H, J_H/H and success@H with CIs."""
    return [{"H": m["budget"], "J": f"{m['J_norm']:.3f} [{m['J_norm_lo']:.3f}, {m['J_norm_hi']:.3f}]",
             "S": f"{m['success']:.3f} [{m['success_lo']:.3f}, {m['success_hi']:.3f}]", "tokens": m["tokens"],
             "n": m["n"], **({"verifier_calls": m["verifier_calls"]} if "verifier_calls" in m else {})}
            for m in metrics]


BUDGET_COLUMNS = [("H", "H"), ("J", "J_H/H [95% CI]"), ("S", "success@H [95% CI]"), ("tokens", "tokens"),
                  ("n", "traces")]
EVAL_COLUMNS = [("method", "method"), ("H", "H"), ("J", "J_H/H [95% CI]"), ("S", "success@H [95% CI]"),
                ("tokens", "tokens"), ("verifier_calls", "verifier calls"), ("n", "n")]


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """veriscale: verifier-free vs verifier-based scaling of test-time compute."""


for _cmd in (reproduce, results, report, relearn):
    main.add_command(_cmd)


# ---- train -------------------------------------------------------------------------------------

@main.group()
def train() -> None:
    """Train pi_b (pretrain) or a learner from any policy: sft (VF), verifier and rl (VB)."""


@train.command("pretrain")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML config (defaults are used for missing keys).")
@policy_options
@click.option("--budgets", default=None,
              help="Budgets of the evaluation table printed after training [default: 8, 16, ... up to the horizon].")
@click.option("--prompts", default=256, show_default=True, type=click.IntRange(min=1),
              help="Held-out prompts of that table.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run directory to write [the config's `out`: runs/base].")
@click.option("--overwrite", is_flag=True, help="Replace --out when it is a run directory that is not empty.")
def pretrain_command(config_path: str | None, overrides: tuple[str, ...], threads: int, budgets: str | None,
                     prompts: int, out: str | None, overwrite: bool) -> None:
    """Pretrain the tiny-GPT base policy on planted-task teacher traces, then print its table."""
    from veriscale.evaluate import evaluate_method
    from veriscale.learn.pretrain import PretrainConfig, pretrain

    try:
        cfg = load_config(PretrainConfig, config_path, with_threads(list(overrides), threads)
                          + ([f"out={json.dumps(out)}"] if out else []))
    except ConfigError as e:
        fail(f"config: {e}")
    b = parse_budgets(budgets) if budgets else default_budgets(cfg.task.horizon)
    if b[-1] > cfg.task.horizon:
        fail(f"--budgets: {b[-1]} exceeds task.horizon={cfg.task.horizon}")
    prepare_out(cfg.out, overwrite)
    out = pretrain(cfg)
    click.echo(f"wrote {out}")
    policy = load_cli_policy(str(out), "--out")
    metrics = evaluate_method("base", policy, policy.task, policy.task.prompts("test", prompts, 0), b)
    click.echo(f"{prompts} held-out prompts, temperature 1.0, sampled once at H={b[-1]}")
    click.echo(format_table(budget_rows(metrics), BUDGET_COLUMNS))


def _learner_options(f):
    """--base/--task/--task-set/--out/--overwrite/--config, and --set/--threads (`policy_options`),
    shared by every learner."""
    for opt in reversed([
        click.option("--base", "base", required=True,
                     help="The policy to train from: a run directory, hf:PATH or smollm2."),
        click.option("--task", "task", default=None,
                     help="planted (a tiny GPT's own task, the default), gym:NAME or file:PATH."),
        click.option("--task-set", "task_overrides", multiple=True, metavar="KEY=VALUE",
                     help="Set a text task's field (gym: max_digits=2, ...; file: test_share=0.2, ...)."),
        click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory to write."),
        click.option("--overwrite", is_flag=True, help="Replace --out when it is a run directory that is not empty."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                     help="TOML config, e.g. a preset of configs/ (defaults are used for missing keys)."),
    ]):
        f = opt(f)
    return policy_options(f)


def _prepare(cls, config_path, overrides, threads, base, task, task_overrides, out, overwrite):
    """Validated config, the transformers settings (hf.*), base policy and task, or exit 2 before
    anything is written."""
    hf, own = hf_settings(overrides)
    try:
        data = apply_overrides(read_toml(config_path) if config_path else {}, with_threads(own, threads))
        cfg = from_dict(cls, data)
    except ConfigError as e:
        fail(f"config: {e}")
    if not overwrite:  # refused before the (slow) policy loads
        prepare_out(out, False)
    policy = load_cli_policy(base, "--base", hf=hf)
    task_obj = cli_task(task, policy, task_overrides)
    cfg = check_supply(cfg, task_obj, given_keys(data))
    if overwrite:  # replaced only once everything else is known to be good
        prepare_out(out, True)
    return cfg, hf, policy, task_obj


def _run(train_fn, *args, **kwargs) -> None:
    """Run a learner; a value it refuses (a missing horizon, too few traces) is one line, exit 2."""
    try:
        run_summary(train_fn(*args, **kwargs))
    except ValueError as e:
        fail(str(e))


@train.command("sft")
@_learner_options
def train_sft_command(config_path, overrides, threads, base, task, task_overrides, out, overwrite) -> None:
    """VF: SFT on n expert traces (veriscale/learn/sft.py)."""
    from veriscale.learn.sft import SFTConfig, train_sft

    cfg, _, policy, task_obj = _prepare(SFTConfig, config_path, overrides, threads, base, task, task_overrides, out,
                                        overwrite)
    _run(train_sft, policy, task_obj, cfg, out)


@train.command("verifier")
@_learner_options
def train_verifier_command(config_path, overrides, threads, base, task, task_overrides, out, overwrite) -> None:
    """VB: per-prefix verifier on labelled rollouts of pi_b, Algorithms 1-2 (veriscale/learn/verifier.py)."""
    from veriscale.learn.ensemble import fit_verifier
    from veriscale.learn.verifier import VerifierConfig

    cfg, _, policy, task_obj = _prepare(VerifierConfig, config_path, overrides, threads, base, task, task_overrides,
                                        out, overwrite)
    _run(fit_verifier, policy, task_obj, cfg, out)


@train.command("rl")
@_learner_options
@click.option("--verifier", "verifier_dir", default=None, type=click.Path(file_okay=False),
              help="Verifier run directory (needed for reward=verifier).")
def train_rl_command(config_path, overrides, threads, base, task, task_overrides, out, overwrite,
                     verifier_dir) -> None:
    """VB: RL with a group baseline and KL to pi_b, on the outcome, return or verifier reward (veriscale/learn/rl.py)."""
    from veriscale.learn.rl import RLConfig, train_rl

    cfg, hf, policy, task_obj = _prepare(RLConfig, config_path, overrides, threads, base, task, task_overrides, out,
                                         overwrite)
    if cfg.reward == "verifier" and verifier_dir is None:
        fail("--verifier: reward=verifier needs a verifier run directory")
    verifier = cli_verifier(verifier_dir, task_obj, hf) if verifier_dir else None
    _run(train_rl, policy, task_obj, cfg, out, verifier=verifier)


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
@click.option("--budgets", default=None,
              help="Comma-separated budgets H [16,32,64,128; a tiny GPT: 8, 16, ... up to its horizon].")
@click.option("--prompts", default=256, show_default=True, type=click.IntRange(min=1), help="Held-out prompts.")
@click.option("--samples-per-prompt", "samples", default=1, show_default=True, type=click.IntRange(min=1),
              help="Independent problems per prompt (traces, or search pools).")
@click.option("--samples-per-problem", "N", default=4, show_default=True, type=click.IntRange(min=1),
              help="N: samples per problem of best-of-N and majority.")
@click.option("--search-n", hidden=True, callback=lambda ctx, p, v: v is None or fail(
    "--search-n: renamed --samples-per-problem (the same value under the new name)"))
@click.option("--accounting", default="shared", show_default=True, type=click.Choice(["shared", "per_sample"]),
              help="Best-of-N against H: the N samples share H (floor(H/N) tokens each, all charged), or "
                   "each sample gets H (the selected trace scored with J_H; N*H tokens drawn).")
@click.option("--force-budget", is_flag=True,
              help="Text policies: sample sequential methods once per budget with s1 budget forcing.")
@click.option("--threshold", default=0.5, show_default=True, type=FiniteRange(0.0, 1.0),
              help="Verifier score at which early_stop stops.")
@click.option("--temperature", default=1.0, show_default=True, type=FiniteRange(min=0.0))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--sampler", default="hf", show_default=True, type=SAMPLER_CHOICE,
              help="Sampler of a transformers policy (vllm: veriscale[vllm] and a CUDA GPU; ct2: CTranslate2 on "
                   "CPU, veriscale[cpu]).")
@policy_options
def evaluate(policy_spec, task, task_overrides, methods, verifier_dir, budgets, prompts, samples, N, search_n,
             accounting, force_budget, threshold, temperature, seed, sampler, overrides, threads) -> None:
    """One table of J_H/H and success@H (95% CIs), tokens and verifier calls per method and budget,
    all methods on the same held-out prompts, each sampled once at the largest budget."""
    import torch

    from veriscale.evaluate import EVALUATIONS, evaluate_method
    from veriscale.policy.forcing import BudgetForcing
    from veriscale.search import NEEDS_VERIFIER

    b = parse_budgets(budgets or "16,32,64,128")
    hf, own = hf_settings(overrides)
    if own:
        fail(f"--set: evaluate has no config of its own; only hf.KEY=VALUE applies, not {own[0]!r}")
    if threads:
        torch.set_num_threads(threads)
    plan = []
    for item in (i.strip() for text in methods for i in text.split(",") if i.strip()):
        name, _, run = item.partition("=")
        if name not in EVALUATIONS:
            fail(f"--method: {name!r} is not one of {', '.join(EVALUATIONS)}")
        plan.append((f"{name}:{Path(run).name}" if run else name, name, run or policy_spec))
    base = load_cli_policy(policy_spec, "--policy", sampler, hf=hf)
    task_obj = cli_task(task, base, task_overrides)
    if base.horizon is not None and budgets is None:
        b = default_budgets(base.horizon)
    if base.horizon is not None and b[-1] > base.horizon:
        fail(f"--budgets: {b[-1]} exceeds the policy's horizon {base.horizon}")
    if force_budget and not base.text:
        fail("--force-budget: budget forcing edits text decoding; the tiny GPT has no answer cue")
    if any(m in NEEDS_VERIFIER for _, m, _ in plan) and verifier_dir is None:
        fail(f"--verifier: methods {', '.join(NEEDS_VERIFIER)} need a verifier run directory")
    if accounting == "shared" and any(m in ("bon", "maj", "wmaj", "oracle") for _, m, _ in plan) and b[0] < N:
        fail(f"--budgets: best-of-{N} needs every budget >= {N}, got {b[0]}")
    verifier = cli_verifier(verifier_dir, task_obj, hf) if verifier_dir else None
    test = task_obj.prompts("test", prompts, seed)
    rows = []
    for label, method, spec in plan:
        policy = base if spec == policy_spec else load_cli_policy(spec, "--method", sampler, hf=hf)
        forcing = BudgetForcing() if force_budget and method in ("base", "sft", "rl") else None
        try:
            recs = evaluate_method(method, policy, task_obj, test, b, verifier=verifier, samples=samples,
                                   N=N, temperature=temperature, seed=seed, threshold=threshold,
                                   accounting=accounting, forcing=forcing)
        except ValueError as e:
            fail(f"{label}: {e}")
        rows += [{"method": label, **row} for row in budget_rows(recs)]
    click.echo(f"{task_obj.name}: {prompts} held-out prompts x {samples} problems, temperature {temperature}, "
               f"seed {seed}; search: N={N} samples, accounting {accounting} ("
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
@click.option("--sampler", type=SAMPLER_CHOICE, default=None,
              help="Sampler of a transformers policy [hf]; vllm needs veriscale[vllm] and a CUDA GPU, ct2 "
                   "(CTranslate2 on CPU) veriscale[cpu].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config.")
@policy_options
def diagnose_command(policy, task, budget, samples, prompts, out, vf_data, sampler, config_path, overrides,
                     threads) -> None:
    """Heterogeneity and anti-concentration of a base policy: JSON, PNGs, tables and a verdict."""
    import torch

    from veriscale.diagnose import DiagnoseConfig, default_out, diagnose, resolve, summary_tables, write_report
    from veriscale.policy.base import PolicyError
    from veriscale.policy.vllm import BackendUnavailable

    given = dict(policy=policy, task=task, budget=budget, samples=samples, prompts=prompts, out=out, sampler=sampler,
                 threads=threads or None, vf_data=vf_data)
    try:
        data = apply_overrides(read_toml(config_path) if config_path else {}, list(overrides))
        data.update({k: v for k, v in given.items() if v is not None})
        data.setdefault("budget", own_horizon(data.get("policy")))
        cfg = from_dict(DiagnoseConfig, {k: v for k, v in data.items() if v is not None})
        if not cfg.policy:
            raise ConfigError("policy: required (--policy RUN_DIR|hf:PATH|smollm2)")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        sampler_obj, task_obj = resolve(cfg)
        cfg = fit_prompts(cfg, task_obj, "prompts" in data)
    except ConfigError as e:
        fail(f"config: {e}")
    except (PolicyError, BackendUnavailable, ValueError) as e:
        fail(str(e))
    try:
        s = diagnose(sampler_obj, task_obj, cfg)
    except ConfigError as e:
        fail(f"config: {e}")
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
        fail(f"config: {e}")
    columns = [("key", "key"), ("type", "type"), ("default", "default" if values is None else "value"),
               ("help", "meaning")]
    table = lambda rows: format_table([{"key": k, "type": t, "default": repr(d), "help": h}  # noqa: E731
                                       for k, t, d, h in rows], columns)
    if kind != "study":
        click.echo(table(describe(cls, defaults=values)))
        return
    from veriscale.study.methods import TABLE
    from veriscale.study.spec import TABLES

    study = values or cls()
    for title, rows in study.sections():
        click.echo(f"{title}\n{table(rows)}\n")
    click.echo("methods (`methods = [...]`)\n" + format_table(
        [{"name": m.name, "doc": m.doc + (f" ({m.needs} tasks only)" if m.needs else "")} for m in TABLE],
        [("name", "name"), ("doc", "what it is")]) + "\n")
    click.echo(f"tables this study does not read: {', '.join(t for t in TABLES if t not in study.tables())}")


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
