"""The `veriscale` command line. Each command validates its config before doing any work:
a bad value prints one line naming the field and exits with code 2."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from veriscale.config import ConfigError, load_config


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


def format_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Plain-text table; columns are (key, header); floats get 3 decimals; numbers align right."""
    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    numeric = [all(isinstance(r[k], (int, float)) for r in rows) for k, _ in columns]
    cells = [[h for _, h in columns]] + [[cell(r[k]) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)).rstrip()
             for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def budget_rows(metrics) -> list[dict]:
    return [{"H": m.budget, "J": f"{m.J_norm:.3f} [{m.J_norm_lo:.3f}, {m.J_norm_hi:.3f}]",
             "S": f"{m.success:.3f} [{m.success_lo:.3f}, {m.success_hi:.3f}]", "tokens": m.tokens, "n": m.n}
            for m in metrics]


BUDGET_COLUMNS = [("H", "H"), ("J", "J_H/H [95% CI]"), ("S", "success@H [95% CI]"), ("tokens", "tokens"),
                  ("n", "traces")]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """veriscale: verifier-free vs verifier-based scaling of test-time compute."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML config (defaults are used for missing keys).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
@click.option("--eval-budgets", default=None,
              help="Budgets of the evaluation table printed after training [default: 8, 16, ... up to the horizon].")
@click.option("--eval-prompts", default=256, show_default=True, help="Held-out prompts for that table.")
def pretrain(config_path: str | None, overrides: tuple[str, ...], eval_budgets: str | None,
             eval_prompts: int) -> None:
    """Pretrain the base policy on teacher traces, then print its evaluation table."""
    from veriscale.learn.pretrain import PretrainConfig, pretrain as run_pretrain

    try:
        cfg = load_config(PretrainConfig, config_path, list(overrides))
    except ConfigError as e:
        _fail(f"config: {e}")
    budgets = _budgets(eval_budgets) if eval_budgets else _default_budgets(cfg.task.horizon)
    if budgets[-1] > cfg.task.horizon:
        _fail(f"--eval-budgets: {budgets[-1]} exceeds task.horizon={cfg.task.horizon}")
    out = run_pretrain(cfg)
    click.echo(f"wrote {out}")
    _print_eval(out, budgets, eval_prompts, samples=1, temperature=1.0, seed=0)


def _print_eval(run_dir: Path, budgets: list[int], prompts: int, samples: int, temperature: float, seed: int) -> None:
    from veriscale.evaluate import evaluate_policy
    from veriscale.policy.sampler import GPTSampler, load_gpt_policy

    model, task, _ = load_gpt_policy(run_dir)
    if budgets[-1] > task.cfg.horizon:
        _fail(f"--budgets: {budgets[-1]} exceeds the policy's horizon {task.cfg.horizon}")
    test = task.prompts("test", prompts, seed)
    metrics = evaluate_policy(GPTSampler(model, task), task, test, budgets, samples=samples,
                              temperature=temperature, seed=seed)
    click.echo(f"policy {run_dir}: {prompts} held-out prompts x {samples} samples, temperature {temperature}, "
               f"sampled once at H={budgets[-1]} and truncated")
    click.echo(format_table(budget_rows(metrics), BUDGET_COLUMNS))


def _run_dir(path: str, flag: str, **expect: str) -> Path:
    """An existing run directory whose config.json has the `expect`ed values, or exit 2 naming the flag."""
    import json

    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        _fail(f"{flag}: {path} is not a run directory (no config.json)")
    cfg = json.loads(cfg_path.read_text())
    for key, value in expect.items():
        if cfg.get(key) != value:
            _fail(f"{flag}: {path} has {key}={cfg.get(key)!r}, expected {value!r}")
    return Path(path)


def _methods(items: tuple[str, ...], policy_dir: str) -> list[tuple[str, str, Path]]:
    """--method values (repeatable, comma lists, NAME or NAME=RUN_DIR) -> (label, method, policy)."""
    from veriscale.evaluate import METHODS

    out = []
    for item in (i.strip() for text in items for i in text.split(",") if i.strip()):
        name, _, run = item.partition("=")
        if name not in METHODS:
            _fail(f"--method: {name!r} is not one of {', '.join(METHODS)}")
        label = f"{name}:{Path(run).name}" if run else name
        out.append((label, name, _run_dir(run or policy_dir, "--method" if run else "--policy", policy="gpt")))
    return out


EVAL_COLUMNS = [("method", "method"), ("H", "H"), ("J", "J_H/H [95% CI]"), ("S", "success@H [95% CI]"),
                ("tokens", "tokens"), ("verifier_calls", "verifier calls"), ("n", "n")]


@main.command()
@click.option("--policy", "policy_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory of the policy (the base policy of search methods).")
@click.option("--method", "methods", multiple=True, default=("base",), show_default=True,
              help="base|expert|sft|rl|bon|maj|wmaj|oracle|early_stop; repeatable or comma-separated; "
                   "NAME=RUN_DIR evaluates that run's policy instead of --policy.")
@click.option("--verifier", "verifier_dir", default=None, type=click.Path(file_okay=False),
              help="Verifier run directory (bon, wmaj, early_stop).")
@click.option("--budgets", default="16,32,64,128", show_default=True, help="Comma-separated budgets H.")
@click.option("--prompts", default=256, show_default=True, type=click.IntRange(min=1), help="Held-out prompts.")
@click.option("--samples", default=1, show_default=True, type=click.IntRange(min=1),
              help="Independent problems per prompt (traces, or search pools).")
@click.option("--n-search", default=4, show_default=True, type=click.IntRange(min=1),
              help="N of best-of-N.")
@click.option("--accounting", default="shared", show_default=True, type=click.Choice(["shared", "per_sample"]),
              help="Best-of-N against H: the N samples share H (floor(H/N) tokens each, all charged), or "
                   "each sample gets H (the selected trace scored with J_H; N*H tokens drawn).")
@click.option("--threshold", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Verifier score at which early_stop stops.")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0.0))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
def evaluate(policy_dir: str, methods: tuple[str, ...], verifier_dir: str | None, budgets: str, prompts: int,
             samples: int, n_search: int, accounting: str, threshold: float, temperature: float, seed: int) -> None:
    """One table of J_H/H and success@H (95% CIs), tokens and verifier calls per method and budget,
    all methods on the same held-out prompts, each sampled once at the largest budget."""
    from veriscale.evaluate import evaluate_method
    from veriscale.search import NEEDS_VERIFIER

    b = _budgets(budgets)
    _run_dir(policy_dir, "--policy", policy="gpt")
    plan = _methods(methods, policy_dir)
    if verifier_dir is not None:
        _run_dir(verifier_dir, "--verifier", stage="verifier")
    elif any(m in NEEDS_VERIFIER for _, m, _ in plan):
        _fail(f"--verifier: methods {', '.join(NEEDS_VERIFIER)} need a verifier run directory")
    if accounting == "shared" and any(m in ("bon", "maj", "wmaj", "oracle") for _, m, _ in plan) and b[0] < n_search:
        _fail(f"--budgets: best-of-{n_search} needs every budget >= {n_search}, got {b[0]}")
    rows = []
    for label, method, run in plan:
        try:
            recs = evaluate_method(method, policy_dir=run, verifier_dir=verifier_dir, prompts=prompts, budgets=b,
                                   samples=samples, n_search=n_search, temperature=temperature, seed=seed,
                                   threshold=threshold, accounting=accounting)
        except ValueError as e:
            _fail(f"{label}: {e}")
        rows += [{"method": label, "H": r["budget"], "n": r["n"], "tokens": r["tokens"],
                  "verifier_calls": r["verifier_calls"],
                  "J": f"{r['J_norm']:.3f} [{r['J_norm_lo']:.3f}, {r['J_norm_hi']:.3f}]",
                  "S": f"{r['success']:.3f} [{r['success_lo']:.3f}, {r['success_hi']:.3f}]"} for r in recs]
    click.echo(f"{prompts} held-out prompts x {samples} problems, temperature {temperature}, seed {seed}; "
               f"search: N={n_search} samples, accounting {accounting} ("
               f"{'floor(H/N) tokens each' if accounting == 'shared' else 'H tokens each'}); "
               f"each method sampled once at H={b[-1]}")
    click.echo(format_table(rows, EVAL_COLUMNS))


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


@main.group()
def train() -> None:
    """Train a learner on a base policy: sft (VF), verifier and rl (VB)."""


def _learner_options(f):
    """--config/--set/--base/--out, shared by every `train` command."""
    for opt in reversed([
        click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                     help="TOML config (defaults are used for missing keys)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field."),
        click.option("--base", "base_dir", required=True, type=click.Path(file_okay=False),
                     help="Run directory of the base policy pi_b (its task is the learner's task)."),
        click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory to write."),
    ]):
        f = opt(f)
    return f


def _learner_config(cls, config_path: str | None, overrides: tuple[str, ...], base_dir: str):
    """Validated learner config and base run directory, or exit 2 before anything is written."""
    try:
        cfg = load_config(cls, config_path, list(overrides))
    except ConfigError as e:
        _fail(f"config: {e}")
    return cfg, _run_dir(base_dir, "--base", policy="gpt")


def _summary(out: Path) -> None:
    """The run directory and the logged record of the kept checkpoint (the best held-out
    evaluation when the learner keeps one, else the last step)."""
    import json

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = json.loads((out / "config.json").read_text()).get("best_step")
    rec = next((r for r in records if r["step"] == best), records[-1]) if records else {}
    click.echo(f"wrote {out}; kept step {rec.get('step')}: " + ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items() if k != "step"))


@train.command("sft")
@_learner_options
def train_sft_command(config_path: str | None, overrides: tuple[str, ...], base_dir: str, out: str) -> None:
    """VF: behaviour cloning on n expert traces (veriscale/learn/sft.py)."""
    from veriscale.learn.sft import SFTConfig, train_sft

    cfg, base = _learner_config(SFTConfig, config_path, overrides, base_dir)
    _summary(train_sft(base, cfg, out))


@train.command("verifier")
@_learner_options
def train_verifier_command(config_path: str | None, overrides: tuple[str, ...], base_dir: str, out: str) -> None:
    """VB: per-prefix verifier on labelled rollouts of pi_b, Algorithms 1-2 (veriscale/learn/verifier.py)."""
    from veriscale.learn.verifier import VerifierConfig, train_verifier

    cfg, base = _learner_config(VerifierConfig, config_path, overrides, base_dir)
    _summary(train_verifier(base, cfg, out))


@train.command("rl")
@_learner_options
@click.option("--verifier", "verifier_dir", default=None, type=click.Path(file_okay=False),
              help="Verifier run directory (needed for reward=verifier).")
def train_rl_command(config_path: str | None, overrides: tuple[str, ...], base_dir: str, out: str,
                     verifier_dir: str | None) -> None:
    """VB: REINFORCE with group baseline and KL to pi_b, outcome or verifier reward (veriscale/learn/rl.py)."""
    from veriscale.learn.rl import RLConfig, train_rl

    cfg, base = _learner_config(RLConfig, config_path, overrides, base_dir)
    if cfg.reward == "verifier" and verifier_dir is None:
        _fail("--verifier: reward=verifier needs a verifier run directory")
    if verifier_dir is not None:
        _run_dir(verifier_dir, "--verifier", stage="verifier")
    _summary(train_rl(base, cfg, out, verifier_dir=verifier_dir))


CONFIGS = {
    "pretrain": "veriscale.learn.pretrain:PretrainConfig",
    "sft": "veriscale.learn.sft:SFTConfig",
    "verifier": "veriscale.learn.verifier:VerifierConfig",
    "rl": "veriscale.learn.rl:RLConfig",
    "study": "veriscale.study.spec:StudyConfig",
    "llm-study": "veriscale.study.llm_spec:LLMStudyConfig",
    "llm-sft": "veriscale.learn.text_sft:TextSFTConfig",
    "llm-verifier": "veriscale.learn.text_verifier:TextVerifierConfig",
    "llm-rl": "veriscale.learn.text_rl:TextRLConfig",
    "diagnose": "veriscale.diagnose:DiagnoseConfig",
}


@main.command("config")
@click.argument("kind", type=click.Choice(sorted(CONFIGS)))
def show_config(kind: str) -> None:
    """List every field of a config: dotted key, type, default and what it means."""
    import importlib

    from veriscale.config import describe

    module, name = CONFIGS[kind].split(":")
    rows = [{"key": k, "type": t, "default": repr(d), "help": h}
            for k, t, d, h in describe(getattr(importlib.import_module(module), name))]
    click.echo(format_table(rows, [("key", "key"), ("type", "type"), ("default", "default"), ("help", "meaning")]))


def _register_study_commands() -> None:
    from veriscale.study.commands import report, reproduce, results

    for cmd in (reproduce, results, report):
        main.add_command(cmd)


_register_study_commands()

@main.command("diagnose")
@click.option("--policy", default=None, help="RUN_DIR (tiny GPT), hf:PATH (local transformers model) or smollm2.")
@click.option("--task", default=None, help="planted (default: the run's own task), gym:NAME or file:PATH.")
@click.option("--budget", type=click.IntRange(min=1), default=None, help="H: token budget per trace [64].")
@click.option("--samples", type=click.IntRange(min=2), default=None, help="M: traces per prompt [16].")
@click.option("--prompts", type=click.IntRange(min=2), default=None, help="N: prompts [64].")
@click.option("--out", default=None, help="Output directory [runs/diagnose/<policy>-<task>].")
@click.option("--backend", type=click.Choice(["hf", "vllm"]), default=None,
              help="Text sampling backend [hf]; vllm needs veriscale[vllm] and a CUDA GPU.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a field (margin=linear, hf.batch_size=32, gym.max_digits=2, ...).")
def diagnose_command(policy, task, budget, samples, prompts, out, backend, config_path, overrides) -> None:
    """Heterogeneity and anti-concentration of a base policy: JSON, PNGs, tables and a verdict."""
    import torch

    from veriscale.config import apply_overrides, from_dict, read_toml
    from veriscale.diagnose import (DiagnoseConfig, default_out, diagnose, resolve, summary_tables,
                                    write_report)
    given = dict(policy=policy, task=task, budget=budget, samples=samples, prompts=prompts, out=out, backend=backend)
    try:
        data = apply_overrides(read_toml(config_path) if config_path else {}, list(overrides))
        data.update({k: v for k, v in given.items() if v is not None})
        cfg = from_dict(DiagnoseConfig, data)
        if not cfg.policy:
            raise ConfigError("policy: required (--policy RUN_DIR|hf:PATH|smollm2)")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        sampler, task_obj = resolve(cfg)
    except ConfigError as e:
        _fail(f"config: {e}")
    except (OSError, ValueError, RuntimeError) as e:  # a missing model (SmolLM2Missing), vLLM or GPU
        _fail(str(e))
    s = diagnose(sampler, task_obj, cfg)
    path = write_report(s, Path(cfg.out) if cfg.out else default_out(cfg))
    click.echo(f"{cfg.policy} on {s['task']} [{s['source']}]: N={cfg.prompts} prompts x M={cfg.samples} traces, "
               f"H={cfg.budget}, temperature {cfg.temperature}: {s['tokens']} tokens in {s['sample_seconds']:.0f} s")
    for rows, columns in summary_tables(s):
        click.echo(format_table(rows, columns) + "\n")
    click.echo(f"verdict: {s['verdict']}")
    click.echo(f"wrote {path} and sigma_hist.png, anticoncentration.png, pass_rate_hist.png beside it")


if __name__ == "__main__":
    main()
