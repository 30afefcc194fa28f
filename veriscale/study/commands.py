"""CLI commands of the study layer: `reproduce`, `results`, `report` (registered in veriscale.cli)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from veriscale.config import ConfigError

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def _study_file(path: str | None, quick: bool) -> Path:
    if path:
        return Path(path)
    return STUDIES / ("didactic-quick.toml" if quick else "didactic.toml")


@click.command()
@click.argument("study_file", required=False, type=click.Path(dir_okay=False))
@click.option("--quick", is_flag=True, help="Run the shipped quick study (studies/didactic-quick.toml).")
@click.option("--out", default=None, help="Study directory (default runs/<study name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a study field.")
@click.option("--workers", default=0, type=click.IntRange(min=0),
              help="Parallel runs in a local process pool [default: one per CPU core].")
@click.option("--threads", default=0, type=click.IntRange(min=0),
              help="torch threads per run (default: cores divided among the workers).")
@click.option("--backend", type=click.Choice(["local", "ray", "vllm"]), default="local", show_default=True,
              help="local process pool, Ray, or vllm: LLM-track jobs one at a time in this process, sampling "
                   "with vLLM on the GPU (needs veriscale[vllm] and CUDA).")
@click.option("--ray-address", default=None, help="ray.init address (default: start a local instance).")
@click.option("--no-report", is_flag=True, help="Only run the sweep.")
def reproduce(study_file, quick, out, overrides, workers, threads, backend, ray_address, no_report) -> None:
    """Run the VF-vs-VB study (resumable sweep) and write its report.

    Without STUDY_FILE: studies/didactic.toml, or studies/didactic-quick.toml with --quick.
    The LLM track: `veriscale reproduce studies/llm.toml` (SmolLM2 on reasoning-gym).
    Rerunning skips finished runs; an interrupted sweep resumes where it stopped.
    """
    from veriscale.study.jobs import check_stage_configs
    from veriscale.study.spec import load_study_config

    if backend == "vllm":  # sampling backend of the LLM track; the jobs run here, one at a time
        overrides, backend, workers = (*overrides, "backend=vllm"), "local", 1
    try:
        study = load_study_config(_study_file(study_file, quick), list(overrides))
        check_stage_configs(study)
    except ConfigError as e:
        _fail(f"config: {e}")
    except (RuntimeError, FileNotFoundError) as e:  # a missing model, vLLM or GPU: said before any work
        _fail(str(e))
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            _fail("--backend ray needs Ray: pip install 'veriscale[ray]'")
    from veriscale.study.sweep import run_study

    study_dir = Path(out or Path("runs") / study.name)
    workers = workers or os.cpu_count() or 1
    counts = run_study(study, study_dir, workers=workers, backend=backend, ray_address=ray_address,
                       threads=threads or None)
    click.echo(f"{study_dir}: {counts['ok']} jobs ran, {counts['skipped']} already done, {counts['error']} failed")
    for err in counts["errors"]:
        click.echo(f"  failed: {err}", err=True)
    if not no_report:
        from veriscale.study.report import write_report

        click.echo(f"wrote {write_report(study_dir)}")
    if counts["error"]:
        sys.exit(1)


@click.command()
@click.argument("study_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--parquet", default=None, type=click.Path(dir_okay=False), help="Also export rows to Parquet.")
def results(study_dir: str, parquet: str | None) -> None:
    """Print a study's results (mean over seeds per method, heterogeneity, n and budget)."""
    from veriscale.cli import format_table
    from veriscale.study.store import export_parquet, load_records, rows, summarize

    flat = rows(load_records(study_dir))
    if not flat:
        _fail(f"{study_dir}: no finished records")
    cols = [("heterogeneity", "het"), ("n", "n"), ("method", "method"), ("H", "H"), ("J_norm", "J_H/H"),
            ("success", "success@H"), ("tokens", "tokens"), ("verifier_calls", "verifier calls"), ("seeds", "seeds")]
    click.echo(format_table(summarize(flat), cols))
    if parquet:
        click.echo(f"wrote {export_parquet(study_dir, parquet)}")


@click.command()
@click.argument("study_dir", type=click.Path(file_okay=False, exists=True))
def report(study_dir: str) -> None:
    """Write the PNG figures and the self-contained report.html of a study from its records."""
    from veriscale.study.report import write_report

    try:
        click.echo(f"wrote {write_report(study_dir)}")
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
