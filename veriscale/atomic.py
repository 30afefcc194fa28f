"""Atomic writes: a file is written to a temporary name in its directory, flushed and renamed
over the target, so a reader (or a resumed sweep) sees either the old file or the new one,
never half of one. Every layer that persists JSON or JSON lines uses these functions, and
through `finite` none writes NaN or Infinity, which JSON does not have (a NaN metric, such as an
AUC without both classes, is written as null)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same directory, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def finite(obj: Any) -> Any:
    """`obj` with every NaN or infinite float (in nested dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_text(obj: Any, **kwargs) -> str:
    """Valid JSON of `obj` (non-finite floats as null; see `finite`)."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """`obj` as indented, key-sorted JSON, written atomically."""
    return write_text_atomic(path, json_text(obj, indent=2, sort_keys=True))


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> Path:
    """One JSON object per line, written atomically."""
    return write_text_atomic(path, "".join(json_text(r) + "\n" for r in rows))
