"""CLI commands of the study layer: `reproduce`, `results`, `report`, `relearn` (registered in
veriscale.cli).
Each imports the study machinery in its own body, so the command line starts fast (cli.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from veriscale.config import ConfigError
from veriscale.console import fail, run_summary
from veriscale.policy import SAMPLERS
from veriscale.tables import format_table

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def _study_file(path: str | None, quick: bool) -> Path:
    """The study to run: the given file, or with --quick its `<stem>-quick.toml` sibling (the
    same study on a smaller grid); without a file, the didactic study."""
    if not path:
        return STUDIES / ("didactic-quick.toml" if quick else "didactic.toml")
    if not quick:
        return Path(path)
    small = Path(path).with_name(f"{Path(path).stem}-quick.toml")
    if not small.is_file():
        fail(f"--quick: no {small} beside {path} (the quick grid of a study is its <name>-quick.toml)")
    return small


@click.command()
@click.argument("study_file", required=False, type=click.Path(dir_okay=False))
@click.option("--quick", is_flag=True, help="Run the quick grid: studies/didactic-quick.toml, or STUDY_FILE's "
                                            "<name>-quick.toml sibling.")
@click.option("--out", default=None, help="Study directory (default runs/<study name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a study field.")
@click.option("--workers", default=0, type=click.IntRange(min=0),
              help="Parallel jobs in a local process pool [default: one per CPU core].")
@click.option("--threads", default=0, type=click.IntRange(min=0),
              help="torch threads per job (default: cores divided among the workers).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where jobs run: a local process pool, or Ray (veriscale[ray]).")
@click.option("--sampler", type=click.Choice(SAMPLERS), default=None,
              help="Sampler of a transformers policy (the study's `sampler`): vllm needs veriscale[vllm] and a "
                   "CUDA GPU, and runs the jobs one at a time in this process.")
@click.option("--ray-address", default=None, help="ray.init address (default: start a local instance).")
@click.option("--no-report", is_flag=True, help="Only run the sweep.")
def reproduce(study_file, quick, out, overrides, workers, threads, executor, sampler, ray_address, no_report) -> None:
    """Run the VF-vs-VB study (resumable sweep) and write its report.

    Without STUDY_FILE: studies/didactic.toml, or studies/didactic-quick.toml with --quick.
    The LLM track: `veriscale reproduce studies/llm.toml [--quick]` (SmolLM2 on reasoning-gym).
    Rerunning skips finished runs; an interrupted sweep resumes where it stopped.
    """
    from veriscale.study.lock import StudyLocked
    from veriscale.study.preflight import preflight
    from veriscale.study.report import write_report
    from veriscale.study.spec import load_study_config
    from veriscale.study.sweep import run_study

    if sampler == "vllm":  # one GPU: the jobs run here, one at a time
        overrides, workers = (*overrides, "sampler=vllm"), 1
    elif sampler:
        overrides = (*overrides, f"sampler={sampler}")
    try:
        study = load_study_config(_study_file(study_file, quick), list(overrides))
        preflight(study)  # before any directory is created
        if executor == "ray":
            import ray  # noqa: F401
    except ConfigError as e:
        fail(f"config: {e}")
    except ImportError:
        fail("--executor ray needs Ray: pip install 'veriscale[ray]'")
    study_dir = Path(out or Path("runs") / study.name)
    workers = workers or os.cpu_count() or 1
    try:
        counts = run_study(study, study_dir, workers=workers, executor=executor, ray_address=ray_address,
                           threads=threads or None)
    except StudyLocked as e:
        fail(str(e))
    for why in counts["rebuilt"]:
        click.echo(f"rebuilt {why}", err=True)
    click.echo(f"{study_dir}: {counts['ok']} jobs ran, {counts['skipped']} already done, {counts['error']} failed")
    for err in counts["errors"]:
        click.echo(f"  failed: {err}", err=True)
    if not no_report:
        click.echo(f"wrote {write_report(study_dir)}")
    if counts["error"]:
        sys.exit(1)


@click.command()
@click.argument("study_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--parquet", default=None, type=click.Path(dir_okay=False), help="Also export rows to Parquet.")
def results(study_dir: str, parquet: str | None) -> None:
    """Print a study's results (mean over seeds per method, heterogeneity, n and budget)."""
    from veriscale.study.store import export_parquet, load_records, rows, summarize

    flat = rows(load_records(study_dir))
    if not flat:
        fail(f"{study_dir}: no finished records")
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
        fail(str(e))


@click.command()
@click.argument("study_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("artifact")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a field of the learner's config (`veriscale config sft|verifier|rl`).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace --out when it is a run directory that is not empty.")
def relearn(study_dir: str, artifact: str, overrides: tuple[str, ...], out: str, overwrite: bool) -> None:
    """Train one learner of a study again, on the same inputs, with its config changed by --set.

    ARTIFACT names a learner of STUDY_DIR (sft-..., verifier-... or rl-...: a folder of its
    artifacts/, or the id of one that failed, as errors/ and the sweep's output name it). Its
    base, samples and verifier are the study's own, so only the overridden fields differ;
    without --set the run repeats the study's. The study is not changed. For ablations such as
    the verifier's stopping rule (docs/llm.md).
    """
    import json

    from veriscale.cli_checks import prepare_out
    from veriscale.config import apply_overrides, from_dict
    from veriscale.study.grid import expand
    from veriscale.study.execute import artifact_dir
    from veriscale.study.jobs import LEARNER_JOBS
    from veriscale.study.spec import study_from_dict
    from veriscale.study.sweep import STUDY_FILE

    study_dir_ = Path(study_dir)
    jobs = {j.id: j for j in expand(study_from_dict(json.loads((study_dir_ / STUDY_FILE).read_text())))} \
        if (study_dir_ / STUDY_FILE).is_file() else {}
    job = jobs.get(artifact)
    if job is None:
        fail(f"ARTIFACT: {artifact} is not a job of the study in {study_dir} (its artifacts/ folder names them)")
    if job.kind not in LEARNER_JOBS:
        fail(f"ARTIFACT: {artifact} is a {job.kind} artifact, not a learner ({', '.join(LEARNER_JOBS)})")
    cfg = apply_overrides(job.cfg, list(overrides))
    try:
        from_dict(job.config_class, cfg)
    except ConfigError as e:
        fail(f"--set: {job.kind}.{e}")
    missing = [d for d in job.deps if not artifact_dir(study_dir_, d).is_dir()]
    if missing:
        fail(f"ARTIFACT: its inputs {', '.join(missing)} are not in {study_dir}/artifacts")
    prepare_out(out, overwrite)
    try:
        job.with_cfg(cfg).make(lambda d: artifact_dir(study_dir_, d), Path(out))
    except ValueError as e:  # a learner that cannot learn from its data says so (learn/verifier.py)
        fail(str(e))
    run_summary(Path(out))
