"""What the commands of `veriscale` (cli.py, study/commands.py) print the same way: a refused
input as one line on stderr with exit status 2 (`fail`), and a learner's run directory with the
record of the step it kept (`run_summary`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import click


def fail(msg: str) -> NoReturn:
    """One line `error: msg` on stderr, then exit 2."""
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def run_summary(out: Path) -> None:
    """The run directory and the logged record of the kept step (the best held-out evaluation
    when the learner keeps one, else the last step)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = json.loads((out / "veriscale.json").read_text()).get("best_step")
    rec = next((r for r in records if r["step"] == best), records[-1]) if records else {}
    click.echo(f"wrote {out}; kept step {rec.get('step')}: " + ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items() if k != "step"))
