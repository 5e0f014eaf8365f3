"""The per-unit build state that makes a demo corpus build resumable, and its ``skipped.csv``
(the ``index.csv`` format itself is :mod:`cleancodec.core.corpus_index`).

A *unit* is a piece of the corpus built in one go (one speech source, one noise package, one
generated noise kind, the test set). When a unit finishes, its rows and skipped files are saved
in ``.state/<unit>.json`` together with a fingerprint of everything it was built from; a rerun
with the same fingerprint whose files are all present rebuilds nothing. ``index.csv`` is the
union of all units' rows, rewritten atomically at the end of every build.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from cleancodec.core.atomic import write_json_atomic
from cleancodec.core.corpus_index import INDEX_NAME, IndexRow, read_index, write_csv_atomic

SKIPPED_NAME = "skipped.csv"
STATE_DIR = ".state"
# bump when the content a unit produces changes for the same config; every unit's fingerprint
# (``core.hashing.fingerprint(STATE_VERSION, ...)``) starts from it
STATE_VERSION = 2


@dataclass
class Skipped:
    """An input file that was left out, and why."""

    unit: str
    file: str
    reason: str


@dataclass
class UnitState:
    unit: str
    fingerprint: str
    rows: list[IndexRow] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


ROLES = ("clean", "noise", "testset-clean", "testset-noisy")
SKIPPED_FIELDS = [f.name for f in dataclasses.fields(Skipped)]


def _state_path(root: Path, unit: str) -> Path:
    return Path(root) / STATE_DIR / f"{unit.replace('/', '__')}.json"


def load_unit(root: Path, unit: str, fp: str) -> UnitState | None:
    """The saved state of ``unit`` if it was built with fingerprint ``fp`` and is complete."""
    path = _state_path(root, unit)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("fingerprint") != fp:
        return None
    state = UnitState(unit=unit, fingerprint=fp,
                      rows=[IndexRow(**r) for r in data.get("rows", [])],
                      skipped=[Skipped(**s) for s in data.get("skipped", [])])
    if not all((Path(root) / r.path).is_file() for r in state.rows):
        return None
    return state


def previous_rows(root: Path, unit: str) -> list[IndexRow]:
    """Rows a unit produced last time, whatever its fingerprint (to remove stale files)."""
    try:
        data = json.loads(_state_path(root, unit).read_text())
        return [IndexRow(**r) for r in data.get("rows", [])]
    except (OSError, ValueError, TypeError):
        return []


def save_unit(root: Path, state: UnitState) -> None:
    """Record a finished unit (atomic)."""
    write_json_atomic(_state_path(root, state.unit), {
        "unit": state.unit, "fingerprint": state.fingerprint,
        "rows": [dataclasses.asdict(r) for r in state.rows],
        "skipped": [dataclasses.asdict(s) for s in state.skipped],
    })


def remove_stale(root: Path, old: list[IndexRow], new: list[IndexRow]) -> int:
    """Delete files an earlier build of a unit wrote that the new build no longer produces."""
    keep = {r.path for r in new}
    removed = 0
    for row in old:
        if row.path not in keep:
            path = Path(root) / row.path
            if path.is_file():
                path.unlink()
                removed += 1
    return removed


def write_skipped(root: Path, skipped: list[Skipped]) -> Path:
    path = Path(root) / SKIPPED_NAME
    write_csv_atomic(path, SKIPPED_FIELDS, [dataclasses.asdict(s) for s in skipped])
    return path


def split_paths(root: str | Path, split: str, role: str) -> list[Path]:
    """Absolute paths of the ``role`` files of ``split``, sorted.

    ``role``: ``clean`` | ``noise`` | ``testset-clean`` | ``testset-noisy``.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    index = Path(root) / INDEX_NAME
    return sorted(r.file(index) for r in read_index(index)
                  if r.split == split and r.role == role)
