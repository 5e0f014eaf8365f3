"""YAML profiles → typed dataclasses.

A profile in ``conf/`` is one YAML mapping with a section per stage (``codec``, ``cache``,
``train``, ``denoise``, ``evaluate``, ``demo``). A profile may start with ``base: other.yaml``
(relative to itself) to inherit another profile and override only some keys; mappings merge
recursively, everything else is replaced. Each stage reads its own section into its own
dataclass; unknown keys are an error naming the file, so a typo never silently falls back to a
default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A profile could not be read or does not match the stage's dataclass."""


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_profile(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML profile, resolving ``base:`` chains, and return the merged mapping."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of stage sections")
    base = data.pop("base", None)
    if base:
        parent = load_profile(path.parent / base, _seen + (path,))
        data = _merge(parent, data)
    return data


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; nested dataclass fields are built recursively.

    Raises ConfigError naming ``where`` and the key for unknown keys.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        tp = _unwrap_optional(hints[name])
        if _is_dataclass_type(tp) and isinstance(value, dict):
            value = from_dict(tp, value, f"{where}.{name}" if where else name)
        kwargs[name] = value
    return cls(**kwargs)


def load_section(path: str | Path | None, section: str, cls: type[T]) -> T:
    """Load one stage section of a profile (defaults when ``path`` is None or the section is absent)."""
    if path is None:
        return cls()
    profile = load_profile(path)
    return from_dict(cls, profile.get(section), f"{path}:{section}")


def to_dict(obj: Any) -> Any:
    """Dataclass → plain dict/list/scalars (JSON- and ``weights_only``-safe)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
