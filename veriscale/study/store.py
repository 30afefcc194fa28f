"""The results store: one JSON record per evaluation run, written atomically, with a digest.

A record is `records/<run id>.json` in the study directory. It carries the run's full config,
its status and, when ok, one metrics row per budget. The digest (SHA-256 of the canonical JSON
of everything else) lets a rerun detect a corrupted or hand-edited file and redo that run.
`veriscale results STUDY` prints the table; `--parquet FILE` exports one row per budget.

An artifact directory is complete when its completion marker `done.json` (written last, with
the SHA-256 of every other file) verifies (`seal`, `damage`): a directory that merely exists
may be damaged, and a rerun rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from veriscale.atomic import write_json_atomic, write_text_atomic
from veriscale.study.methods import record_label

SCHEMA = 1
DONE = "done.json"


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != DONE)


def seal(directory: Path) -> None:
    """Write the completion marker of a finished artifact directory: every file's digest."""
    write_json_atomic(directory / DONE, {"files": {f: _file_digest(directory / f) for f in _files(directory)}})


def damage(directory: Path) -> str | None:
    """Why the artifact at `directory` is not complete (no marker, a file missing, added or
    changed since it was sealed), or None when it verifies."""
    try:
        files = json.loads((directory / DONE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no valid {DONE} (unfinished or damaged)"
    extra = sorted(set(_files(directory)) - set(files))
    if extra:
        return f"{extra[0]} was added after it was finished"
    for name, want in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if _file_digest(path) != want:
            return f"{name}: digest differs from {DONE} (truncated or modified)"
    return None


def write_record(study_dir: Path, job, result: dict[str, Any]) -> Path:
    """Atomically write the record of evaluation `job` (temporary file, fsync, rename)."""
    body = {"schema": SCHEMA, "id": job.id, "config": job.config, **result}
    path = Path(study_dir) / "records" / f"{job.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    # byte for byte as its digest reads it: Python's JSON, where an undefined metric stays NaN (a
    # method that never succeeds has no T_std); `finite` would make it null and the digest stale
    write_text_atomic(path, json.dumps({**body, "digest": _digest(body)}, indent=2, sort_keys=True))
    return path


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path`, or None when it is missing, unreadable, or fails its digest."""
    try:
        rec = json.loads(Path(path).read_text())
        body = {k: v for k, v in rec.items() if k != "digest"}
        if rec.get("schema") != SCHEMA or rec.get("digest") != _digest(body) or rec.get("id") != Path(path).stem:
            return None
        return rec
    except (OSError, ValueError, AttributeError):
        return None


def load_records(study_dir: str | Path, *, ok_only: bool = True) -> list[dict[str, Any]]:
    """Valid records of a study, sorted by id; corrupted files are skipped (a rerun redoes them)."""
    out = []
    for path in sorted((Path(study_dir) / "records").glob("*.json")):
        rec = read_record(path)
        if rec is not None and (rec["status"] == "ok" or not ok_only):
            out.append(rec)
    return out


def rows(records: list[dict[str, Any]], ns: list[int] | None = None) -> list[dict[str, Any]]:
    """One flat row per (record, budget): grid coordinates plus the budget's metrics.

    The method is its report label (search methods carry their accounting: `bon:per_sample`).
    A run that uses no training data (n = None: base, expert) is repeated at every n of `ns`
    when given. Diagnosis records are not budget rows (see `diagnoses`)."""
    out = []
    for rec in records:
        c = rec["config"]
        if c["method"] == "diagnose":
            continue
        label = record_label(c)
        for n in (ns or [None]) if c["n"] is None else [c["n"]]:
            for m in rec["metrics"]:  # the grid's coordinates win over any same-named metric field
                out.append({**m, "run_id": rec["id"], "method": label, "heterogeneity": c["heterogeneity"],
                            "horizon": c["horizon"], "n": n, "seed": c["seed"], "mode": c["mode"],
                            **{f"data_{k}": v for k, v in rec.get("data", {}).items()}})
    return out


def diagnoses(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """(heterogeneity, horizon) -> the base policy's diagnosis summary."""
    return {(r["config"]["heterogeneity"], r["config"]["horizon"]): r["metrics"][0]
            for r in records if r["config"]["method"] == "diagnose"}


def summarize(flat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds per (heterogeneity, n, method, budget), with the number of seeds (n None:
    a method that uses no training data, shown once)."""
    groups: dict[tuple, list[dict]] = {}
    for r in flat:
        groups.setdefault((r["heterogeneity"], r["n"], r["method"], r["budget"]), []).append(r)
    out = []
    # n is None for methods that use no training data (base, expert): they sort first
    for (het, n, method, H), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, *kv[0][2:])):
        mean = lambda k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
        out.append({"heterogeneity": het, "n": n, "method": method, "H": H, "seeds": len(rs),
                    "J_norm": mean("J_norm"), "success": mean("success"), "tokens": mean("tokens"),
                    "verifier_calls": mean("verifier_calls") if "verifier_calls" in rs[0] else 0.0})
    return out


def export_parquet(study_dir: str | Path, out: str | Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = rows(load_records(study_dir))
    if not flat:
        raise ValueError(f"{study_dir}: no finished records to export")
    pq.write_table(pa.Table.from_pylist(flat), str(out))
    return Path(out)
