"""The corpus index (``index.csv``) and the per-unit build state that makes a build resumable.

A *unit* is a piece of the corpus built in one go (one speech source, one noise package, one
generated noise kind, the test set). When a unit finishes, its rows and skipped files are saved
in ``.state/<unit>.json`` together with a fingerprint of everything it was built from; a rerun
with the same fingerprint whose files are all present rebuilds nothing. ``index.csv`` is the
union of all units' rows, rewritten atomically at the end of every build.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cleancodec.core import hashing
from cleancodec.core.atomic import write_json_atomic, write_text_atomic

INDEX_NAME = "index.csv"
SKIPPED_NAME = "skipped.csv"
STATE_DIR = ".state"
STATE_VERSION = 2  # bump when the content a unit produces changes for the same config
FINGERPRINT_CHARS = 16


@dataclass
class IndexRow:
    """One audio file of the corpus; ``path`` is relative to the corpus root."""

    path: str
    role: str  # clean | noise | testset-clean | testset-noisy
    split: str  # train | val | test
    kind: str  # "speech" for clean speech, the noise kind for noise and test-set mixtures
    speaker: str = ""  # empty for noise
    language: str = ""
    duration_s: float = 0.0
    source_package: str = ""
    source_version: str = ""
    license: str = ""
    synthetic: bool = False  # text-to-speech voice (only meaningful for speech)
    source_sample_rate: int = 0  # rate of the material it was made from (8000 = narrowband)
    origin: str = ""  # files inside the package (or the generator and seed) it was made from


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
INDEX_FIELDS = [f.name for f in dataclasses.fields(IndexRow)]
SKIPPED_FIELDS = [f.name for f in dataclasses.fields(Skipped)]


def fingerprint(*parts: Any) -> str:
    """A unit's fingerprint: :func:`pipeline.hashing.fingerprint` of ``STATE_VERSION`` and the
    JSON-able ``parts`` (config dicts, seeds, other fingerprints), cut to ``FINGERPRINT_CHARS``."""
    return hashing.fingerprint(STATE_VERSION, *parts)[:FINGERPRINT_CHARS]


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


def write_csv_atomic(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    """Write a CSV through a temp file in the same folder and rename it over ``path``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def write_index(root: Path, rows: list[IndexRow]) -> Path:
    path = Path(root) / INDEX_NAME
    ordered = sorted(rows, key=lambda r: (r.role, r.split, r.kind, r.speaker, r.path))
    write_csv_atomic(path, INDEX_FIELDS, [_row_dict(r) for r in ordered])
    return path


def write_skipped(root: Path, skipped: list[Skipped]) -> Path:
    path = Path(root) / SKIPPED_NAME
    write_csv_atomic(path, SKIPPED_FIELDS, [dataclasses.asdict(s) for s in skipped])
    return path


def _row_dict(row: IndexRow) -> dict[str, Any]:
    out = dataclasses.asdict(row)
    out["duration_s"] = f"{row.duration_s:.3f}"
    out["synthetic"] = "yes" if row.synthetic else "no"
    return out


def read_index(root: str | Path) -> list[IndexRow]:
    """Read ``<root>/index.csv`` back into rows."""
    path = Path(root) / INDEX_NAME
    with open(path, newline="") as fh:
        rows = []
        for raw in csv.DictReader(fh):
            raw["duration_s"] = float(raw["duration_s"])
            raw["synthetic"] = raw["synthetic"] == "yes"
            raw["source_sample_rate"] = int(raw["source_sample_rate"] or 0)
            rows.append(IndexRow(**raw))
    return rows


def split_paths(root: str | Path, split: str, role: str) -> list[Path]:
    """Absolute paths of the ``role`` files of ``split``, sorted.

    ``role``: ``clean`` | ``noise`` | ``testset-clean`` | ``testset-noisy``.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    return sorted(Path(root) / r.path for r in read_index(root)
                  if r.split == split and r.role == role)
