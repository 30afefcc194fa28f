"""Checkpoints are `model.safetensors` plus a JSON `config.json`, never pickle.

`load_state` refuses a directory whose weights are in any other format (.pt, .bin, .pkl, ...),
so an untrusted run directory can never execute code on load.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
_UNSAFE = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temporary file in the same directory, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(run_dir: str | Path, model: torch.nn.Module, config: dict[str, Any]) -> Path:
    """Write weights (safetensors; tied weights stored once) and config; weights first, atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{WEIGHTS}.tmp"
    save_model(model, str(tmp))
    os.replace(tmp, run_dir / WEIGHTS)
    write_json_atomic(run_dir / CONFIG, config)
    return run_dir


def read_config(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {CONFIG}; not a veriscale run directory")
    return json.loads(path.read_text())


def load_state(run_dir: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    """Load `model.safetensors` into `model` (strict); refuse pickle-based weight files."""
    run_dir = Path(run_dir)
    path = run_dir / WEIGHTS
    if not path.is_file():
        unsafe = sorted(p.name for p in run_dir.glob("*") if p.suffix in _UNSAFE) if run_dir.is_dir() else []
        hint = f" (found {', '.join(unsafe)}: pickle-based formats are refused)" if unsafe else ""
        raise FileNotFoundError(f"{run_dir}: no {WEIGHTS}{hint}")
    load_model(model, str(path), strict=True)
    return model
