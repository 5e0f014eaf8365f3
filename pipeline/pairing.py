"""Premixed corpora: clean / noisy file pairs that already exist, instead of mixing here.

A premixed corpus is a clean folder and a noisy folder whose files correspond one to one (or one
clean file to several noisy ones). Three layouts are recognised, each by one pairing rule:

========  ==========================================================================  ==========
rule      a clean file and a noisy file pair when they share                          layouts
========  ==========================================================================  ==========
path      the relative path without its extension (``a/x.wav`` ↔ ``a/x.flac``)          seed,
                                                                                      VoiceBank
name      the file name without its extension, in any subfolder                       flattened
fileid    the DNS synthesiser's ``fileid_N`` (``clean_fileid_7.wav`` ↔                 DNS
          ``..._snr10_tl-22_fileid_7.wav``; :func:`cleancodec.core.dns.fileid`)
========  ==========================================================================  ==========

:func:`choose_pairing` tries all three and keeps the rule that pairs the most clean files (ties:
the order above), so a corpus needs no flag to say which layout it has. Under ``name`` and
``fileid`` several clean files can share a key: those are ambiguous and rejected. Several noisy
files sharing a clean file's key are that file's noisy *variants*.

:func:`premixed_record` then applies the audio checks of the corpus scan to both sides and the
pair checks (same channel count, lengths within one codec hop at 16 kHz), fixes ``K``, splits
the pairs by speaker and returns the ``corpus.json`` record. ``K`` (noisy variants per clean
window) is read from the data: the most common number of usable noisy files per clean file
(ties: the smaller). A clean file with more keeps its first ``K`` (by relative path) and the
extra ones are listed as rejected; a clean file with fewer is rejected with its noisy files, so
every window of the cache has ``K`` real variants and no noisy window is repeated.

Every file that does not enter the cache gets a ``reason`` (listed in ``rejected.tsv``).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from cleancodec.core import dns
from cleancodec.pipeline import corpus as corpus_mod

PAIRING_RULES = ("path", "name", "fileid")
NOISY_ROLE = "noisy"
PREMIXED_ROLES = ("clean", NOISY_ROLE, "rir")


def _path_key(rel: str) -> str:
    return PurePosixPath(rel).with_suffix("").as_posix()


def _name_key(rel: str) -> str:
    return PurePosixPath(rel).stem


def _fileid_key(rel: str) -> str | None:
    number = dns.fileid(rel)
    return None if number is None else str(number)


RULE_KEYS: dict[str, Callable[[str], str | None]] = {
    "path": _path_key, "name": _name_key, "fileid": _fileid_key}


@dataclass
class Pairing:
    """Clean ↔ noisy files matched by one rule (relative paths throughout).

    ``partners``: clean file → its noisy files (sorted), for every clean file with at least one;
    ``ambiguous``: file → reason, for clean files sharing a key and the noisy files of that key;
    ``unpaired_clean`` / ``unpaired_noisy``: files no file of the other side matches;
    ``candidates``: how many clean files each rule tried would pair.
    """

    rule: str
    partners: dict[str, list[str]]
    unpaired_clean: list[str] = field(default_factory=list)
    unpaired_noisy: list[str] = field(default_factory=list)
    ambiguous: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, int] = field(default_factory=dict)


def pair_by(rule: str, clean: list[str], noisy: list[str]) -> Pairing:
    """Match ``clean`` and ``noisy`` relative paths by ``rule`` (one of :data:`PAIRING_RULES`)."""
    if rule not in RULE_KEYS:
        raise ValueError(f"pairing rule must be one of {PAIRING_RULES}, got {rule!r}")
    key_of = RULE_KEYS[rule]
    clean_by: dict[str, list[str]] = {}
    noisy_by: dict[str, list[str]] = {}
    unpaired_clean, unpaired_noisy = [], []
    for rels, by, unkeyed in ((clean, clean_by, unpaired_clean),
                              (noisy, noisy_by, unpaired_noisy)):
        for rel in sorted(rels):
            key = key_of(rel)
            if key is None:
                unkeyed.append(rel)
            else:
                by.setdefault(key, []).append(rel)
    out = Pairing(rule, {})
    for key, cleans in clean_by.items():
        partners = noisy_by.get(key, [])
        if len(cleans) > 1:
            why = (f"ambiguous pairing: {len(cleans)} clean files share the {rule} key "
                   f"{key!r} ({', '.join(cleans)})")
            out.ambiguous.update({rel: why for rel in cleans + partners})
        elif partners:
            out.partners[cleans[0]] = partners
        else:
            unpaired_clean.append(cleans[0])
    unpaired_noisy += [rel for key, rels in noisy_by.items() if key not in clean_by
                       for rel in rels]
    out.unpaired_clean, out.unpaired_noisy = sorted(unpaired_clean), sorted(unpaired_noisy)
    return out


def choose_pairing(clean: list[str], noisy: list[str]) -> Pairing:
    """The pairing of the rule that pairs the most clean files (ties: :data:`PAIRING_RULES`
    order), with every rule's count in ``candidates``."""
    tried = [pair_by(rule, clean, noisy) for rule in PAIRING_RULES]
    counts = {p.rule: len(p.partners) for p in tried}
    best = max(tried, key=lambda p: (len(p.partners), -PAIRING_RULES.index(p.rule)))
    best.candidates = counts
    return best


def common_variant_count(counts: list[int]) -> int:
    """``K``: the most common of ``counts`` (noisy files per clean file; ties: the smaller),
    0 when there are none."""
    if not counts:
        return 0
    tally = Counter(counts)
    return min(tally, key=lambda k: (-tally[k], k))


@dataclass
class _Entry:
    """One file's line in the record, being filled in."""

    file: corpus_mod.AudioFile
    result: corpus_mod.ScanResult
    reason: str | None = None
    split: str | None = None
    partners: list[str] = field(default_factory=list)
    pair_length: int = 0

    def reject(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


def _check_partners(clean: _Entry, noisy: dict[str, _Entry], tolerance: int) -> list[str]:
    """Reject ``clean``'s unusable noisy partners (bad audio, other channel count, length off by
    more than ``tolerance`` samples) and return the usable ones."""
    good = []
    for rel in clean.partners:
        entry = noisy[rel]
        if entry.reason is not None:
            continue
        if entry.result.channels != clean.result.channels:
            entry.reject(f"channel count differs from its clean file {clean.file.rel} "
                         f"(clean {clean.result.channels}, noisy {entry.result.channels})")
        elif abs(entry.result.length - clean.result.length) > tolerance:
            entry.reject(f"length differs from its clean file {clean.file.rel} by "
                         f"{abs(entry.result.length - clean.result.length)} samples at the "
                         f"cache rate (more than one hop, {tolerance})")
        else:
            good.append(rel)
    return good


def premixed_record(files: list[corpus_mod.AudioFile], results: list[corpus_mod.ScanResult],
                    val_fraction: float, seed: int, speaker_source: str,
                    speaker_patterns: list[str] | tuple[str, ...], tolerance: int,
                    fingerprint: str, sample_rate: int) -> dict[str, Any]:
    """The ``corpus.json`` record of a premixed corpus.

    Parameters
    ----------
    files, results : every discovered file (roles ``clean``, ``noisy``, ``rir``) and its scan.
    val_fraction, seed : the speaker-disjoint val split (``corpus.split_files``).
    speaker_source, speaker_patterns : where speaker ids come from; a clean file whose own name
        carries none (DNS ``clean_fileid_N``) takes its first noisy file's (``reader_NNNNN``).
    tolerance : largest length difference (samples at ``sample_rate``) of a kept pair, which is
        then trimmed to the shorter.

    Returns
    -------
    ``{fingerprint, sample_rate, seed, files: {role: [{rel, length, channels, reason, speaker,
    split}, ...]}, pairing: {rule, candidates, noisy_per_clean, pairs, unpaired: {clean,
    noisy}, rejected}}``; a clean entry also holds ``noisy`` (its kept noisy files) and
    ``pair_length`` (the shortest of the pair's lengths), a noisy entry the split of its clean.
    """
    entries: dict[str, dict[str, _Entry]] = {role: {} for role in PREMIXED_ROLES}
    for f, r in zip(files, results):
        entries[f.role][f.rel] = _Entry(f, r, r.reason)
    clean, noisy = entries["clean"], entries[NOISY_ROLE]
    pairing = choose_pairing(list(clean), list(noisy))
    for rel, why in pairing.ambiguous.items():
        (clean if rel in clean else noisy)[rel].reject(why)
    for rel in pairing.unpaired_clean:
        clean[rel].reject(f"unpaired: no noisy file matches it (pairing rule: {pairing.rule})")
    for rel in pairing.unpaired_noisy:
        noisy[rel].reject(f"unpaired: no clean file matches it (pairing rule: {pairing.rule})")
    usable: list[_Entry] = []
    for rel, partners in pairing.partners.items():
        entry = clean[rel]
        entry.partners = partners
        if entry.reason is None:
            entry.partners = _check_partners(entry, noisy, tolerance)
            if not entry.partners:
                entry.reject("no usable noisy file (see its noisy files' reasons)")
        if entry.reason is None:
            usable.append(entry)
        else:
            for n in partners:
                noisy[n].reject(f"its clean file {rel} was rejected")
    k = common_variant_count([len(e.partners) for e in usable])
    kept = []
    for entry in usable:
        if len(entry.partners) < k:
            entry.reject(f"only {len(entry.partners)} usable noisy file(s); a premixed cache "
                         f"takes K = {k} per clean file (the most common count)")
            for n in entry.partners:
                noisy[n].reject(f"its clean file {entry.file.rel} was rejected")
            continue
        for n in entry.partners[k:]:
            noisy[n].reject(f"extra variant: its clean file {entry.file.rel} already has "
                            f"K = {k} noisy files")
        entry.partners = entry.partners[:k]
        entry.pair_length = min([entry.result.length]
                                + [noisy[n].result.length for n in entry.partners])
        if entry.file.speaker is None and speaker_source in ("auto", "pattern"):
            entry.file.speaker = corpus_mod.speaker_from_name(entry.partners[0],
                                                             speaker_patterns)
        kept.append(entry)
    parts = corpus_mod.split_files([e.file for e in kept], val_fraction, seed)
    split_of = {f.rel: corpus_mod.HELD_OUT_SPLIT for f in parts.held_out}
    for split in corpus_mod.SPLITS:
        split_of.update({f.rel: split for f in parts.of(split)})
    for entry in kept:
        entry.split = split_of[entry.file.rel]
        for n in entry.partners:
            noisy[n].split = entry.split
    for entry in entries["rir"].values():
        entry.split = "shared" if entry.reason is None else None
    record_files: dict[str, list[dict[str, Any]]] = {}
    for role in PREMIXED_ROLES:
        rows = []
        for rel, e in sorted(entries[role].items()):
            row = {"rel": rel, "length": e.result.length, "channels": e.result.channels,
                   "reason": e.reason, "speaker": e.file.speaker, "split": e.split}
            if role == "clean":
                row.update(noisy=e.partners if e.reason is None else [],
                           pair_length=e.pair_length)
            rows.append(row)
        record_files[role] = rows
    rejected = sum(row["reason"] is not None for rows in record_files.values() for row in rows)
    summary = {"rule": pairing.rule, "candidates": pairing.candidates, "noisy_per_clean": k,
               "pairs": len(kept),
               "unpaired": {"clean": len(pairing.unpaired_clean),
                            "noisy": len(pairing.unpaired_noisy)},
               "rejected": rejected}
    return {"fingerprint": fingerprint, "sample_rate": sample_rate, "seed": seed,
            "files": record_files, "pairing": summary}


__all__ = ["NOISY_ROLE", "PAIRING_RULES", "PREMIXED_ROLES", "Pairing", "choose_pairing",
           "common_variant_count", "pair_by", "premixed_record"]
