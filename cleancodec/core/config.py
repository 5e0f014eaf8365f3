"""One configuration system for every stage: YAML profiles and command-line overrides → typed
dataclasses, through OmegaConf structured configs.

A profile in ``conf/`` is one YAML mapping with a section per stage (see :data:`SECTIONS`). A
profile may start with ``base: other.yaml`` (relative to itself) to inherit another profile and
change only some keys; mappings merge recursively, everything else is replaced. Each stage reads
its own sections into its own dataclass schema, whose field defaults are the only place a default
is written. Values are type-checked as they are merged (``train.optim.lr_g: fast`` is an error),
unknown keys are errors, and every error names the key path and where the value came from.
Values a type cannot refuse (ranges, choices, relations between keys) are checked in one way
only: the schema dataclass's ``__post_init__`` calls :func:`require` with the key's full path,
so a bad value is refused wherever the dataclass is built. A profile holds only the keys whose
value differs from the schema's default (``tests/test_profiles.py`` checks ``conf/``).

Any key can be changed on the command line as ``section.key=value`` (OmegaConf dot-list syntax:
``train.steps=500``, ``train.optim.betas=[0.5,0.9]``, ``codec.weights=null``), after the profile.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")

#: Every section a profile may hold; each stage reads the ones it needs.
SECTIONS = ("codec", "cache", "train", "denoise", "evaluate", "demo", "demo_data")
BASE_KEY = "base"
COMMAND_LINE = "command line"
_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+=")


class ConfigError(ValueError):
    """A profile or an override could not be read or does not match the stage's schema."""


def require(ok: bool, key: str, problem: str) -> None:
    """Raise :class:`ConfigError` ``"<key> <problem>"`` unless ``ok``.

    The one way a schema checks its values: each schema dataclass calls it from
    ``__post_init__`` with the key's full path (``train.data.batch_size``), so a bad value is
    refused wherever the dataclass is built (profile, override, checkpoint, code).
    """
    if not ok:
        raise ConfigError(f"{key} {problem}")


def require_positive_ints(obj: Any, prefix: str, names: Iterable[str]) -> None:
    """:func:`require` that each field ``names`` of ``obj`` is an integer ≥ 1 (``prefix.name``)."""
    for name in names:
        value = getattr(obj, name)
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                f"{prefix}.{name}", f"must be a positive integer, got {value!r}")


def _describe(exc: OmegaConfBaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return first


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        node = OmegaConf.load(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file ({exc.strerror})") from exc
    except Exception as exc:  # yaml.YAMLError and OmegaConf's own grammar errors
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: top level must be a mapping of stage sections")
    return OmegaConf.to_container(node, resolve=False)  # type: ignore[return-value]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_profile(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML profile, resolving ``base:`` chains, and return the merged mapping.

    Raises
    ------
    ConfigError
        Missing file, invalid YAML, a ``base`` loop, or a top-level key that is not a section.
    """
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    data = _read_yaml(path)
    base = data.pop(BASE_KEY, None)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; known: {list(SECTIONS)}")
    if base:
        data = _merge(load_profile(path.parent / base, _seen + (path,)), data)
    return data


def split_overrides(args: Iterable[str]) -> tuple[list[str], list[str]]:
    """Separate ``section.key=value`` overrides from other arguments (paths), keeping order."""
    overrides, rest = [], []
    for arg in args:
        (overrides if _OVERRIDE.match(arg) else rest).append(arg)
    return overrides, rest


def check_overrides(overrides: Sequence[str], sections: Sequence[str], command: str) -> None:
    """Refuse overrides this command does not read, naming the key.

    Raises
    ------
    ConfigError
        For an argument that is not ``section.key=value``, or whose section is unknown or is not
        one of ``sections``.
    """
    for item in overrides:
        if not _OVERRIDE.match(item):
            raise ConfigError(f"{COMMAND_LINE}: {item!r} is not an override of the form "
                              "section.key=value")
        key = item.split("=", 1)[0]
        section = key.split(".", 1)[0]
        if section not in SECTIONS:
            raise ConfigError(f"{COMMAND_LINE}: {key}: unknown section {section!r}; "
                              f"known: {list(SECTIONS)}")
        if section not in sections:
            raise ConfigError(f"{COMMAND_LINE}: {key}: `cleancodec {command}` reads only the "
                              f"section(s) {list(sections)}")


def _section_overrides(overrides: Sequence[str], section: str) -> list[str]:
    prefix = section + "."
    return [item[len(prefix):] for item in overrides if item.startswith(prefix)]


# Keys that existed once and were removed: a profile or override still setting one is refused
# with what replaced it, rather than with a "did you mean" guess.
REMOVED_KEYS: dict[str, str] = {
    "denoise.context_frames": "the chunk context is now derived from the receptive field of "
                              "codec + denoiser (docs/inference.md); delete the key",
}


def _refuse_removed(where: str, section: str, layer: Any) -> None:
    keys = ([item.split("=", 1)[0] for item in layer] if isinstance(layer, list)
            else list(layer) if isinstance(layer, dict) else [])
    for key in keys:
        removed = REMOVED_KEYS.get(f"{section}.{key}")
        if removed:
            raise ConfigError(f"{where}: {section}.{key} was removed: {removed}")


def _build(cls: type[T], layers: list[tuple[str, Any]], section: str) -> T:
    """Merge ``layers`` (where, mapping-or-dotlist) onto the schema of ``cls``; type-check."""
    node = OmegaConf.structured(cls)
    for where, layer in layers:
        _refuse_removed(where, section, layer)
        try:
            if isinstance(layer, list):
                layer = OmegaConf.from_dotlist(layer)
            node = OmegaConf.merge(node, layer)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None)
            path = f"{section}.{key}" if section and key else (section or key or "")
            raise ConfigError(f"{where}: {path}: {_describe(exc)}") from exc
    try:
        return OmegaConf.to_object(node)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{section}.{key}: {_describe(exc)}") from exc
    except ConfigError:  # a schema's own __post_init__ check: it names the key already
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{section}: {exc}") from exc


def load_section(path: str | Path | None, section: str, cls: type[T],
                 overrides: Sequence[str] = ()) -> T:
    """Load one section of a profile into its schema ``cls``.

    Parameters
    ----------
    path : str, Path or None
        YAML profile; ``None`` (or a profile without this section): the schema's defaults.
    section : str
        One of :data:`SECTIONS`.
    cls : dataclass type
        The section's schema.
    overrides : sequence of str
        ``section.key=value`` items; those of other sections are ignored here (see
        :func:`check_overrides`).

    Raises
    ------
    ConfigError
        Naming the file (or "command line") and the key path, for unknown keys and wrong types.
    """
    layers: list[tuple[str, Any]] = []
    if path is not None:
        data = load_profile(path).get(section)
        if data is not None:
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: {section}: must be a mapping, got {data!r}")
            layers.append((str(path), data))
    mine = _section_overrides(overrides, section)
    if mine:
        layers.append((COMMAND_LINE, mine))
    return _build(cls, layers, section)


def written_section(path: str | Path | None, section: str,
                    overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The keys of ``section`` that the user wrote: the profile's (``base:`` chain included)
    merged with this section's command-line overrides, as a plain mapping, without defaults.

    Call it after :func:`load_section` has accepted the same arguments (it does not check keys or
    types). A key counts as written when it appears, with any value, in the profile or in an
    override, even when that value equals the schema's default.
    """
    data: dict[str, Any] = {}
    if path is not None:
        found = load_profile(path).get(section)
        if isinstance(found, dict):
            data = found
    mine = _section_overrides(overrides, section)
    if mine:
        data = _merge(data, OmegaConf.to_container(OmegaConf.from_dotlist(mine)))  # type: ignore[arg-type]
    return data


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping with the same type checks as a profile."""
    section = where.rsplit(":", 1)[-1] if where else ""
    return _build(cls, [(where or cls.__name__, dict(data or {}))], section)


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


def to_yaml(obj: Any) -> str:
    """A resolved config (dataclass or mapping) as YAML, for ``cleancodec config``."""
    return OmegaConf.to_yaml(OmegaConf.create(to_dict(obj)))
