"""Typed, validated configs: dataclasses whose fields carry their help text and valid range.

Every entry point has one config dataclass built from `knob(...)` fields. `load_config` reads a
TOML file, applies `--set a.b=value` overrides and validates everything before any work starts:
an unknown key, a wrong type or an out-of-range value raises `ConfigError` naming the dotted
field, which the CLI turns into a one-line message and exit code 2.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

C = TypeVar("C")


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or out of range; the message names the field."""


def knob(default: Any, help: str, *, min: float | None = None, max: float | None = None) -> Any:
    """A documented config field. `min`/`max` are inclusive bounds checked at load time."""
    meta = {"help": help, "min": min, "max": max}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check `value` against annotation `tp`, converting only the lossless cases (int -> float)."""
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{name}: expected one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{name}: invalid value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = get_args(tp)
        return [_coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a table, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, prefix=f"{name}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):  # TOML spells nan and inf; no setting means either
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
        return float(value)
    if tp is dict:  # a free-form table, validated by the config it is later merged into
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a table, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"{name}: unsupported config annotation {tp!r}")


def _check_range(value: Any, f: dataclasses.Field, name: str) -> None:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    items = value if isinstance(value, list) else [value]
    for v in items:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if lo is not None and v < lo:
                raise ConfigError(f"{name}: {v} is below the minimum {lo}")
            if hi is not None and v > hi:
                raise ConfigError(f"{name}: {v} is above the maximum {hi}")


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build and validate `cls` from a plain dict; missing keys take their defaults."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (valid keys: {', '.join(sorted(fields))})")
    kwargs = {}
    for key, value in data.items():
        name = prefix + key
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            # a partial table keeps this field's own defaults for the keys it omits (a learner's
            # `optim` defaults differ from OptimConfig's), not the nested class's
            value = deep_merge(to_dict(_default(fields[key])), value)
        kwargs[key] = _coerce(value, hints[key], name)
        _check_range(kwargs[key], fields[key], name)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}") from None


def _parse_scalar(text: str) -> Any:
    """Parse an override value as a TOML value, falling back to a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` strings to a nested dict (copied); values are parsed as TOML."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{item}: override must look like key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {p} is not a table")
        node[parts[-1]] = _parse_scalar(text.strip())
    return out


def read_toml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A TOML config as a dict. A top-level `extends = "other.toml"` (relative to this file)
    starts from that file's fields, which this file's own fields override table by table: a
    study's quick grid or second task states only what differs."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    if "extends" not in data:
        return data
    base = data.pop("extends")
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: expected a file name, got {base!r}")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: extends: a cycle through {' -> '.join(str(p) for p in _seen)}")
    return deep_merge(read_toml(path.parent / base, (*_seen, path.resolve())), data)


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Read TOML (optional), apply overrides, validate: the one way entry points get a config."""
    data = read_toml(path) if path else {}
    return from_dict(cls, apply_overrides(data, overrides or []))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def describe(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, help) for every field, nested tables flattened; a nested
    table shows the defaults its parent field gives it."""
    rows = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else _default(f)
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, prefix=f"{prefix}{f.name}.", defaults=default)
            continue
        rows.append((prefix + f.name, getattr(tp, "__name__", str(tp)), default, f.metadata.get("help", "")))
    return rows


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `extra` merged in; nested tables merge key by key."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
