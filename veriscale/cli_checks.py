"""The command line's checks before work (cli.py, study/commands.py): finite float options, run
directories that are not overwritten by accident, the prompts a task can supply, and the
one-line end of a command that the machine refuses (a full disk: `Main`).
"""

from __future__ import annotations

import errno
import math
import shutil
import sys
from pathlib import Path

import click

from veriscale.config import ConfigError
from veriscale.console import fail


class FiniteRange(click.FloatRange):
    """A float option in a range that also refuses nan and inf (click's FloatRange lets nan
    through: every comparison with it is false)."""

    def convert(self, value, param, ctx):
        out = super().convert(value, param, ctx)
        if not math.isfinite(out):
            self.fail(f"{out} is not a finite number.", param, ctx)
        return out


# What the machine, not the input, refuses: a full disk or quota, a read-only or failing device.
ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


class Main(click.Group):
    """The command group; a write the machine refuses ends any command with one line, exit 1
    (what was written before stays consistent: every file is written atomically)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OSError as e:
            if e.errno not in ENVIRONMENT_ERRORS:
                raise
            click.echo(f"error: {e.strerror}" + (f": {e.filename}" if e.filename else "")
                       + "; free space (or fix the device) and rerun: finished work is kept", err=True)
            sys.exit(1)


def prepare_out(out: str, overwrite: bool) -> None:
    """Refuse (exit 2) a run directory `out` that is not empty, unless `overwrite`: then it is
    removed, but only if it is a run directory (so a mistyped --out never deletes other files)."""
    path = Path(out)
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not overwrite:
        fail(f"--out: {out} exists and is not empty (--overwrite replaces a run directory)")
    if not ((path / "veriscale.json").is_file() or (path / "metrics.jsonl").is_file()):
        fail(f"--out: {out} is not a run directory (no veriscale.json or metrics.jsonl); --overwrite replaces "
              "only run directories")
    shutil.rmtree(path)


def check_supply(cfg, task, given: set[str]):
    """`cfg`, once the task is known to supply the prompts the learner draws: its n training
    prompts, the validation prompts beside them (expert traces, or checked samples) and SFT's
    test prompts. A validation or test count the user did not set shrinks to what the task
    holds (a one-digit task has 198 training problems), with a note; anything else short is one
    line naming the settings, exit 2, before any training."""
    from dataclasses import replace

    from veriscale.tasks.load import most

    search = getattr(cfg, "expert", "") == "search"
    try:
        train = task.prompts("train", cfg.n, cfg.data_seed)
    except ValueError as e:
        fail(f"--set n={cfg.n}: {_option_names(e)}")
    val_key = "val_traces" if hasattr(cfg, "val_traces") and not search else \
        "samples.val_prompts" if hasattr(cfg, "samples") else None
    checks = [] if val_key is None else [
        (val_key, lambda k: task.validation_prompts(train, k, cfg.data_seed + 7919), "validation")]
    if hasattr(cfg, "test_traces") and not search:
        checks.append(("test_traces", lambda k: task.prompts("test", k, 0), "test"))
    for key, supply, what in checks:
        want = cfg.samples.val_prompts if key == "samples.val_prompts" else getattr(cfg, key)
        try:
            supply(want)
            continue
        except ValueError as e:
            have = most(supply, want)
            if key in given or have < 1:
                fail(f"--set {key}={want}: {_option_names(e)}; lower it (or n), or widen the task with --task-set")
        click.echo(f"{task.name} supplies {have} {what} problems beside the {cfg.n} training ones: {key}={have} "
                   f"(default {want}; --set {key} sets it)", err=True)
        cfg = replace(cfg, samples=replace(cfg.samples, val_prompts=have)) if key == "samples.val_prompts" \
            else replace(cfg, **{key: have})
    return cfg


def _option_names(e: Exception) -> str:
    """A task's message, its config fields (gym.test_share) spelled as a learner sets them."""
    return str(e).replace("gym.", "--task-set ").replace("files.", "--task-set ")


def given_keys(table: dict, prefix: str = "") -> set[str]:
    """The dotted keys a config file and --set overrides set (nested tables flattened)."""
    out = set()
    for k, v in table.items():
        out |= given_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


def own_horizon(spec: str | None) -> int | None:
    """A tiny-GPT run directory's horizon (its traces are never longer), the default budget of a
    command given that policy; None for any other policy."""
    from veriscale.policy.base import PolicyError, read_meta

    try:
        meta = read_meta(spec) if spec and Path(spec).is_dir() else None
    except PolicyError:
        return None  # the loader reports it
    return (meta or {}).get("task", {}).get("horizon") if (meta or {}).get("policy") == "gpt" else None


def fit_prompts(cfg, task, given: bool):
    """`cfg` with its default prompt count cut to what the task's split supplies (a one-digit
    task has 44 distinct test problems); a count the user gave is checked, and refused with the
    task's own reason, before any sampling."""
    from dataclasses import replace

    from veriscale.tasks.load import most

    try:
        task.prompts(cfg.split, cfg.prompts, cfg.seed)
        return cfg
    except ValueError as e:
        if given:
            raise ConfigError(f"prompts: {e}") from None
    n = most(lambda k: task.prompts(cfg.split, k, cfg.seed), cfg.prompts)
    if n < 2:
        raise ConfigError(f"prompts: {task.name} has {n} distinct {cfg.split} problems; a diagnosis needs 2")
    click.echo(f"{task.name} supplies {n} distinct {cfg.split} problems: diagnosing {n} prompts (default "
               f"{cfg.prompts}; --prompts sets it)", err=True)
    return replace(cfg, prompts=n)
