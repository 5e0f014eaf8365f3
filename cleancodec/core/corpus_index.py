"""The corpus index (``index.csv``): one row per audio file of a corpus, read and written here.

The demo corpus writes it (``datagen.demo``) and the cache stage reads it (``pipeline.corpus``:
speakers and splits); a user's own corpus may carry one too. Columns are the fields of
:class:`IndexRow`. Only ``path`` is required when reading (relative to the csv's folder, or
absolute); every other column may be missing or empty and then takes the field's default, and
columns that are not fields are ignored. Column names are read case- and space-insensitively.
"""
from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cleancodec.core.atomic import write_text_atomic

INDEX_NAME = "index.csv"
PATH_COLUMN = "path"
YES, NO = "yes", "no"  # how ``synthetic`` is written
TRUE_WORDS = frozenset({YES, "true", "1"})
FALSE_WORDS = frozenset({NO, "false", "0", ""})
DURATION_DECIMALS = 3


class IndexFileError(ValueError):
    """An ``index.csv`` that cannot be read; the message names the file (and line) and why."""


@dataclass
class IndexRow:
    """One audio file of the corpus; ``path`` is relative to the index's folder (or absolute).

    Empty strings mean "not known" (``speaker`` of a noise file, ``split`` of a file the
    cache stage splits itself).
    """

    path: str
    role: str = ""  # clean | noise | testset-clean | testset-noisy
    split: str = ""  # train | val | test
    kind: str = ""  # "speech" for clean speech, the noise kind for noise and test-set mixtures
    speaker: str = ""  # empty for noise
    language: str = ""
    duration_s: float = 0.0
    source_package: str = ""
    source_version: str = ""
    license: str = ""
    synthetic: bool = False  # text-to-speech voice (only meaningful for speech)
    source_sample_rate: int = 0  # rate of the material it was made from (8000 = narrowband)
    origin: str = ""  # files inside the package (or the generator and seed) it was made from

    def file(self, index_path: str | Path) -> Path:
        """The file this row names: ``path`` joined to the folder of ``index_path`` (an
        absolute ``path`` stays as it is)."""
        return Path(index_path).parent / self.path


INDEX_FIELDS = [f.name for f in dataclasses.fields(IndexRow)]
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(IndexRow)}


def _parse(name: str, text: str) -> Any:
    """The value of column ``name`` written as ``text`` (raises ValueError when malformed)."""
    kind = _FIELD_TYPES[name]
    if kind == "float":
        return float(text) if text else 0.0
    if kind == "int":
        return int(text) if text else 0
    if kind == "bool":
        word = text.lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ValueError(f"{name} must be {YES} or {NO}, got {text!r}")
        return word in TRUE_WORDS
    return text


def read_index(path: str | Path) -> list[IndexRow]:
    """Read the ``index.csv`` at ``path`` into rows, in file order (see module docstring).

    Raises IndexFileError when the file cannot be read, has no ``path`` column, or holds a
    malformed number or yes/no value (naming the line).
    """
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            columns = [(c or "").strip().lower() for c in (reader.fieldnames or [])]
            if PATH_COLUMN not in columns:
                raise IndexFileError(f"{path}: index has no '{PATH_COLUMN}' column "
                                     f"(columns: {columns})")
            rows = []
            for raw in reader:
                values = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()
                          if isinstance(v, str)}
                try:
                    fields = {name: _parse(name, values[name]) for name in INDEX_FIELDS
                              if name in values}
                except ValueError as exc:
                    raise IndexFileError(f"{path}: line {reader.line_num}: {exc}") from exc
                if not fields.get(PATH_COLUMN):
                    raise IndexFileError(f"{path}: line {reader.line_num}: empty path")
                rows.append(IndexRow(**fields))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise IndexFileError(f"{path}: cannot read index ({exc})") from exc


def write_csv_atomic(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    """Write a CSV through a temp file in the same folder and rename it over ``path``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def _row_dict(row: IndexRow) -> dict[str, Any]:
    out = dataclasses.asdict(row)
    out["duration_s"] = f"{row.duration_s:.{DURATION_DECIMALS}f}"
    out["synthetic"] = YES if row.synthetic else NO
    return out


def write_index(root: str | Path, rows: list[IndexRow]) -> Path:
    """Write ``rows`` to ``<root>/index.csv`` atomically, sorted by role, split, kind, speaker
    and path; returns its path."""
    path = Path(root) / INDEX_NAME
    ordered = sorted(rows, key=lambda r: (r.role, r.split, r.kind, r.speaker, r.path))
    write_csv_atomic(path, INDEX_FIELDS, [_row_dict(r) for r in ordered])
    return path


__all__ = ["INDEX_FIELDS", "INDEX_NAME", "IndexFileError", "IndexRow", "read_index",
           "write_csv_atomic", "write_index"]
