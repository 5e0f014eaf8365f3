"""The project's hashes, written once: a file's sha256, a string's sha256, and a fingerprint.

- :func:`sha256_file`: hex sha256 of a file's bytes, read in blocks (codec weights, shards).
- :func:`sha256_text`: hex sha256 of a UTF-8 string (seeded, order-free ranks of names).
- :func:`fingerprint`: hex sha256 of JSON-able values in a canonical form (sorted keys,
  non-JSON values by ``str``): equal values give equal fingerprints on every machine, so a
  build can tell whether a part's settings changed since it was built.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

HASH_BLOCK = 1 << 20  # bytes read per update when hashing a file


def sha256_file(path: str | Path, block: int = HASH_BLOCK) -> str:
    """Hex sha256 of the file at ``path``, read ``block`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(*parts: Any) -> str:
    """Hex sha256 of ``parts`` as canonical JSON (sorted keys; other values by ``str``)."""
    return sha256_text(json.dumps(list(parts), sort_keys=True, default=str))


__all__ = ["HASH_BLOCK", "fingerprint", "sha256_file", "sha256_text"]
