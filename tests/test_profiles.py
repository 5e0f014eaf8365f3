"""The profiles in conf/ hold only what differs: every key a profile writes exists in its
section's schema and changes the value the key would have without it (the schema's default, the
model preset's value for a ``train.denoiser`` key, or the value of the profile's ``base:``)."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from cleancodec.core.config import BASE_KEY, load_profile, to_dict
from cleancodec.schemas import schema
from cleancodec.trainer.config import TrainConfig, resolve_preset

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted((REPO / "conf").glob("*.yaml"))


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _item_class(tp: Any) -> type | None:
    """The dataclass of the items of a ``list[X]`` field, else None."""
    if typing.get_origin(tp) is list:
        (arg,) = typing.get_args(tp)
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return to_dict(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return to_dict(f.default_factory())
    return dataclasses.MISSING


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _problems(written: Any, underneath: Any, cls: type | None, where: str) -> list[str]:
    """Keys of ``written`` absent from dataclass ``cls`` or equal to ``underneath``."""
    if cls is None or not isinstance(written, dict):
        return [f"{where}: restates {written!r}"] if _same(written, underneath) else []
    fields = {f.name: f for f in dataclasses.fields(cls)}
    types = _field_types(cls)
    out = []
    for key, value in written.items():
        path = f"{where}.{key}"
        if key not in fields:
            out.append(f"{path}: not a key of {cls.__name__}")
            continue
        tp = types[key]
        below = underneath.get(key, dataclasses.MISSING) if isinstance(underneath, dict) else (
            dataclasses.MISSING)
        nested = tp if dataclasses.is_dataclass(tp) else None
        item = _item_class(tp)
        if item is not None and isinstance(value, list):
            if _same(value, below):
                out.append(f"{path}: restates {value!r}")
            for i, entry in enumerate(value):  # each entry against its class's defaults
                defaults = {f.name: _field_default(f) for f in dataclasses.fields(item)}
                out += _problems(entry, defaults, item, f"{path}[{i}]")
            continue
        out += _problems(value, below, nested, path)
    return out


def _underneath(path: Path, section: str, own: dict[str, Any]) -> dict[str, Any]:
    """What ``section`` would hold without this file's own keys: the schema's defaults (the
    chosen model preset applied to the denoiser) under the ``base:`` profile's values."""
    base_file = yaml.safe_load(path.read_text()).get(BASE_KEY)
    base = load_profile(path.parent / base_file).get(section, {}) if base_file else {}
    defaults = to_dict(schema(section)())
    if section == "train":
        preset = {**defaults, **base, **own}.get("preset")
        written = set(base.get("denoiser") or {})
        resolved = resolve_preset(TrainConfig(preset=preset), None, written)
        defaults["denoiser"] = to_dict(resolved.denoiser)
    return _merge(defaults, base)


def _merge(below: dict, over: dict) -> dict:
    out = dict(below)
    for key, value in over.items():
        same_kind = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if same_kind else value
    return out


def profile_problems(path: Path) -> list[str]:
    """Every key of profile ``path`` that is unknown to its schema or restates a value."""
    own = yaml.safe_load(path.read_text()) or {}
    out = []
    for section, written in own.items():
        if section == BASE_KEY or written is None:
            continue
        underneath = _underneath(path, section, written)
        out += _problems(written, underneath, schema(section), f"{path.name}: {section}")
    return out


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_holds_only_keys_that_differ(path):
    assert profile_problems(path) == []


def test_the_check_finds_restated_and_unknown_keys(tmp_path):
    (tmp_path / "base.yaml").write_text("cache:\n  seed: 7\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: base.yaml\n"
                   "cache:\n  seed: 7\n  storage: zarr\n  mix: {snr_min_db: -5, snr_mx_db: 3}\n"
                   "  coverage: 2.0\n"
                   "train:\n  preset: large\n  denoiser: {width: 768, depth: 3}\n  stepz: 1\n"
                   "demo_data:\n  speech:\n    - {package: p, speaker: s, language: en,\n"
                   "       license: CC0-1.0, files: '*', enabled: true}\n")
    assert sorted(profile_problems(bad)) == sorted([
        "bad.yaml: cache.seed: restates 7",                      # the base's value
        "bad.yaml: cache.storage: restates 'zarr'",              # the schema's default
        "bad.yaml: cache.mix.snr_min_db: restates -5",
        "bad.yaml: cache.mix.snr_mx_db: not a key of MixConfig",
        "bad.yaml: train.denoiser.width: restates 768",          # the preset's value
        "bad.yaml: train.stepz: not a key of TrainConfig",
        "bad.yaml: demo_data.speech[0].enabled: restates True",  # a list entry's default
    ])
    # a key the base sets, written back to the schema's default, is a change
    (tmp_path / "undo.yaml").write_text("base: base.yaml\ncache:\n  seed: 1234\n")
    assert profile_problems(tmp_path / "undo.yaml") == []
