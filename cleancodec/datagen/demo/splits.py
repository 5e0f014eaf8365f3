"""Split assignment: speakers are fixed in the config; noise files are held out by a seeded hash.

Noise is held out per *source file* (a music track, one sample), never per segment, so no
test noise segment shares a recording with a training one.
"""
from __future__ import annotations

from collections import defaultdict

from cleancodec.core.corpus_index import IndexRow
from cleancodec.core.hashing import sha256_text

MIN_FILES_FOR_TEST = 2  # a kind with fewer source files keeps them all for training
MIN_FILES_FOR_VAL = 3


def _rank(seed: int, scope: str, name: str) -> str:
    return sha256_text(f"{seed}/{scope}/{name}")


def hold_out(names: list[str], seed: int, scope: str, test_fraction: float,
             val_fraction: float) -> dict[str, str]:
    """Assign each source file in ``names`` to train / val / test.

    Files are ordered by a hash of ``(seed, scope, name)``; the first ``round(n *
    test_fraction)`` (at least one when there are two or more files) go to test, the next
    ``round(n * val_fraction)`` (at least one from three files on) to val, the rest to train;
    train always keeps at least one file. The result does not depend on the order of ``names``.
    """
    ordered = sorted(set(names), key=lambda n: _rank(seed, scope, n))
    n = len(ordered)
    n_test = max(1, round(n * test_fraction)) if n >= MIN_FILES_FOR_TEST else 0
    n_val = max(1, round(n * val_fraction)) if n >= MIN_FILES_FOR_VAL else 0
    while n_test + n_val > n - 1 and (n_test or n_val):
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    out = {}
    for i, name in enumerate(ordered):
        out[name] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


class SplitLeak(AssertionError):
    """The corpus breaks a split rule (a speaker or a noise recording in two splits)."""


def check_disjoint(rows: list[IndexRow]) -> None:
    """Raise SplitLeak when a speaker, or a noise source recording, appears in two splits.

    Test-set mixtures count as test for their speaker, so a test-set clip cut from a training
    speaker is a leak too.
    """
    speaker_splits: dict[str, set[str]] = defaultdict(set)
    source_splits: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.role in ("clean", "testset-clean"):
            speaker_splits[r.speaker].add(r.split)
        elif r.role == "noise" and r.source_package:
            for origin in r.origin.split():
                source_splits[f"{r.source_package}:{origin}"].add(r.split)
    for what, table in (("speaker", speaker_splits), ("noise recording", source_splits)):
        for name, splits in sorted(table.items()):
            if len(splits) > 1:
                raise SplitLeak(f"{what} {name!r} is in splits {sorted(splits)}")
