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
    """Plain-text table; columns are (key, header); floats get 3 decimals."""
    cells = [[h for _, h in columns]] + [
        [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
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


@main.command()
@click.option("--policy", "policy_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory of a trained policy.")
@click.option("--budgets", default="16,32,64,128", show_default=True, help="Comma-separated budgets H.")
@click.option("--prompts", default=256, show_default=True, type=click.IntRange(min=1), help="Held-out prompts.")
@click.option("--samples", default=1, show_default=True, type=click.IntRange(min=1), help="Traces per prompt.")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0.0))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
def evaluate(policy_dir: str, budgets: str, prompts: int, samples: int, temperature: float, seed: int) -> None:
    """Print J_H/H and success@H with 95% CIs per budget for a trained policy."""
    b = _budgets(budgets)
    if not (Path(policy_dir) / "config.json").is_file():
        _fail(f"--policy: {policy_dir} is not a run directory (no config.json)")
    _print_eval(Path(policy_dir), b, prompts, samples, temperature, seed)


@main.group()
def bench() -> None:
    """Speed benchmarks (figures go to BENCHMARKS.md)."""


@bench.command("engine")
@click.option("--batches", default="64,256", show_default=True, help="Batch sizes to time.")
@click.option("--new-tokens", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1))
def bench_engine(batches: str, new_tokens: int, repeats: int) -> None:
    """Engine vs full-recompute reference vs transformers generate; training tokens/s and MFU."""
    from veriscale.bench import run_engine_bench

    click.echo(run_engine_bench([int(b) for b in batches.split(",")], new_tokens, repeats))


def _register_study_commands() -> None:
    from veriscale.study.commands import report, reproduce, results

    for cmd in (reproduce, results, report):
        main.add_command(cmd)


_register_study_commands()

if __name__ == "__main__":
    main()
