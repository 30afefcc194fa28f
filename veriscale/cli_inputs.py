"""What the commands that load a policy share: their --budgets, --set and --threads options, and
the policy, task and verifier they name, each resolved or refused with one line naming the flag
(exit 2) before any work starts.
"""

from __future__ import annotations

from pathlib import Path

import click

from veriscale.config import ConfigError, apply_overrides, from_dict
from veriscale.console import fail


def parse_budgets(text: str) -> list[int]:
    try:
        out = sorted({int(b) for b in text.split(",") if b.strip()})
    except ValueError:
        fail(f"--budgets: expected comma-separated integers, got {text!r}")
    if not out or out[0] < 1:
        fail(f"--budgets: budgets must be positive integers, got {text!r}")
    return out


def default_budgets(horizon: int) -> list[int]:
    """8, 16, 32, ... below the horizon, and the horizon itself."""
    return sorted({b for b in (2**i for i in range(3, 20)) if b < horizon} | {horizon})


def policy_options(f):
    """--set and --threads, taken alike by every command that loads a policy."""
    f = click.option("--threads", default=0, type=click.IntRange(min=0),
                     help="torch CPU threads [default: the config's `threads`, else torch's].")(f)
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a config field; hf.KEY=VALUE sets a transformers policy's loading and "
                             "sampling (hf.batch_size=32, ...; `veriscale config diagnose` lists them).")(f)


def with_threads(overrides: list[str], threads: int) -> list[str]:
    """--set items with --threads as `threads=N` (a config's `threads` field; the flag wins)."""
    return overrides + ([f"threads={threads}"] if threads else [])


def hf_settings(overrides: tuple[str, ...]):
    """(HFConfig from the hf.KEY=VALUE items of --set, the other items), or exit 2 naming a bad
    hf setting."""
    from veriscale.policy.text import HFConfig

    try:
        hf = from_dict(HFConfig, apply_overrides({}, [o[3:] for o in overrides if o.startswith("hf.")]), "hf.")
    except ConfigError as e:
        fail(f"--set: {e}")
    return hf, [o for o in overrides if not o.startswith("hf.")]


def load_cli_policy(spec: str, flag: str, sampler: str = "hf", stages: tuple[str, ...] | None = None, hf=None):
    """The policy of `spec` loaded with the transformers settings `hf`, or exit 2 with one line
    naming the flag and what is wrong (PolicyError, or a setting the model refuses)."""
    from veriscale.policy.load import POLICY_STAGES, load_policy
    from veriscale.policy.vllm import BackendUnavailable

    try:
        return load_policy(spec, hf=hf, sampler=sampler, stages=stages or POLICY_STAGES)
    except (ValueError, BackendUnavailable) as e:
        fail(f"{flag}: {e}")


def cli_task(task: str | None, policy, overrides: tuple[str, ...] = ()):
    """The task named by --task; without it, the task a run directory records (a tiny GPT's own
    planted task, or the text task a learner was trained on, with its configuration). `overrides`
    (--task-set KEY=VALUE) change a text task's configuration (tasks/gym.py, tasks/files.py)."""
    from veriscale.policy.base import read_meta
    from veriscale.tasks.files import FilesConfig
    from veriscale.tasks.gym import GymConfig
    from veriscale.tasks.load import is_text, make_task

    if policy.task is not None:
        if task not in (None, policy.task.name):
            fail(f"--task: a tiny-GPT policy works on its own {policy.task.name} task, not {task!r}")
        if overrides:
            fail(f"--task-set: a tiny-GPT policy's {policy.task.name} task is fixed by its run directory")
        return policy.task
    meta = (read_meta(policy.spec) or {}) if Path(policy.spec).is_dir() else {}
    spec = task or meta.get("task_spec")
    if spec is None:
        fail("--task: required for a transformers policy (gym:NAME or file:PATH)")
    if not is_text(spec):
        fail(f"--task: a transformers policy needs a text task (gym:NAME or file:PATH), not {spec!r}")
    own = meta.get("task") if meta.get("task_spec") == spec else None
    try:
        table = apply_overrides(own or {}, list(overrides))
        if spec.startswith("gym:"):
            return make_task(spec, gym=from_dict(GymConfig, table, "task-set "))
        return make_task(spec, files=from_dict(FilesConfig, table, "task-set "))
    except (ConfigError, ValueError, OSError) as e:
        fail(f"--task: {e}")


def cli_verifier(path: str, task, hf):
    """The verifier (or ensemble) of a run directory, or exit 2 with one line naming --verifier."""
    from veriscale.learn.ensemble import open_verifier
    from veriscale.policy.base import PolicyError

    try:
        return open_verifier(path, task, hf)
    except PolicyError as e:
        fail(f"--verifier: {e}")
