"""The inputs of a cache build: which folders, which files, which are usable, which split.

Built on the per-file layer in :mod:`cleancodec.pipeline.corpus` (finding files, speaker ids,
speaker-disjoint splits, checking one file), this module does the build-level part that needs a
:class:`~cleancodec.pipeline.cache_config.CacheConfig` and the cache folder:

- :func:`resolve_inputs`: the clean / noise / RIR folders (arguments, config, or the generated
  synthetic corpus) as :class:`Inputs` — or, for a premixed corpus, clean / noisy / RIR;
- :func:`discover` and :func:`scan_corpus` (:func:`scan_premixed` for premixed pairs, paired in
  :mod:`cleancodec.pipeline.pairing`): every candidate file, checked (in worker processes when
  asked) and split, as the ``corpus.json`` record;
- :func:`rejections` and :func:`write_rejected`: the rejected files and ``rejected.tsv``.
"""
from __future__ import annotations

import json
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cleancodec.core.atomic import atomic_path, write_json_atomic
from cleancodec.core.hashing import fingerprint
from cleancodec.datagen.synth import make_tiny_corpus_from
from cleancodec.pipeline import corpus as corpus_mod
from cleancodec.pipeline.cache_config import CacheConfig
from cleancodec.pipeline.pairing import NOISY_ROLE, PREMIXED_ROLES, premixed_record

SPLITS = corpus_mod.SPLITS
ROLES = ("clean", "noise", "rir")
CORPUS_FILE = "corpus.json"
REJECTED_FILE = "rejected.tsv"
REJECTED_HEADER = ("path", "role", "reason")
DEMO_HINT_PARTS = ("data", "demo")
SCAN_CHUNKS_PER_WORKER = 8  # pool.map chunks per worker when checking files


@dataclass
class Inputs:
    """Resolved input folders (absolute) and where they came from (``dirs`` / ``synthetic``).

    A mixing build has ``noise``; a premixed one ``noisy`` (and ``noise`` None)."""

    clean: Path
    noise: Path | None
    rir: Path | None
    corpus: str
    noisy: Path | None = None

    @property
    def premixed(self) -> bool:
        """True for premixed clean / noisy pairs (``noisy`` set)."""
        return self.noisy is not None

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles of the input files: clean / noise / rir, or clean / noisy / rir."""
        return PREMIXED_ROLES if self.premixed else ROLES

    def as_dict(self) -> dict[str, Any]:
        """JSON form, as recorded under ``inputs`` in the manifest."""
        out = {"clean": str(self.clean), "noise": str(self.noise) if self.noise else None,
               "rir": str(self.rir) if self.rir else None, "corpus": self.corpus}
        if self.premixed:
            out["noisy"] = str(self.noisy)
        return out


@dataclass
class Rejection:
    """An input file the build skips: absolute ``path``, its ``role`` and why."""

    path: str
    role: str
    reason: str


def _missing_folder(role: str, path: Path) -> corpus_mod.CorpusError:
    message = f"{path}: {role} folder not found"
    if all(part in path.parts for part in DEMO_HINT_PARTS):
        message += " — the demo corpus is built by `make demo-data`; run that first"
    else:
        message += f" (give it with --{role} / make {role.upper()}=DIR, or set cache.{role})"
    return corpus_mod.CorpusError(message)


def _noise_or_noisy(cfg: CacheConfig, noise_dir: str | Path | None,
                    noisy_dir: str | Path | None) -> tuple[str | Path | None, str | Path | None]:
    """``(noise, noisy)``: the arguments when either is given, else the config's; both set at
    the same level is a CorpusError (mixing here and premixed pairs exclude each other)."""
    if noise_dir and noisy_dir:
        raise corpus_mod.CorpusError(
            f"--noise {noise_dir} and --noisy {noisy_dir} exclude each other: --noise mixes the "
            "clean speech with noise here, --noisy takes premixed clean/noisy pairs; give one")
    if noise_dir or noisy_dir:
        return noise_dir, noisy_dir
    if cfg.noise and cfg.noisy:
        raise corpus_mod.CorpusError(
            f"cache.noise ({cfg.noise}) and cache.noisy ({cfg.noisy}) are both set: cache.noise "
            "mixes the clean speech with noise here, cache.noisy takes premixed clean/noisy "
            "pairs; set one (e.g. cache.noise=null), or give --noise / --noisy")
    return cfg.noise, cfg.noisy


def resolve_inputs(cfg: CacheConfig, clean_dir: str | Path | None = None,
                   noise_dir: str | Path | None = None, rir_dir: str | Path | None = None,
                   generate: bool = True, noisy_dir: str | Path | None = None) -> Inputs:
    """Pick the clean / noise (or premixed noisy) / RIR folders: arguments, else the config,
    else the synthetic corpus.

    ``noise`` and ``noisy`` exclude each other (CorpusError when both are given as arguments,
    or both set in the config with neither given); an argument beats the config's other one.
    With ``corpus: synthetic`` and no folders given, the corpus is generated (or reused) under
    ``cfg.synthetic_dir`` when ``generate`` is true. Raises CorpusError for missing folders.
    """
    noise, noisy = _noise_or_noisy(cfg, noise_dir, noisy_dir)
    clean = clean_dir or cfg.clean
    rir = rir_dir or cfg.rir
    kind = "dirs"
    if cfg.corpus == "synthetic" and not (clean_dir or noise_dir or noisy_dir):
        root = Path(cfg.synthetic_dir)
        if generate:
            make_tiny_corpus_from(cfg.synthetic, root)
        clean, noise, noisy, kind = root / "clean", root / "noise", None, "synthetic"
    if not clean or not (noise or noisy):
        raise corpus_mod.CorpusError(
            "no clean/noise folders: pass --clean DIR --noise DIR (make CLEAN=… NOISE=…), or "
            "premixed pairs with --clean DIR --noisy DIR (make CLEAN=… NOISY=…), set "
            "cache.clean / cache.noise, or use cache.corpus: synthetic")
    paths = {"clean": Path(clean).absolute(), "noise": Path(noise).absolute() if noise else None,
             NOISY_ROLE: Path(noisy).absolute() if noisy else None,
             "rir": Path(rir).absolute() if rir else None}
    for role, path in paths.items():
        if path is not None and not path.is_dir():
            raise _missing_folder(role, path)
    return Inputs(clean=paths["clean"], noise=paths["noise"], rir=paths["rir"], corpus=kind,
                  noisy=paths[NOISY_ROLE])


def discover(inputs: Inputs, cfg: CacheConfig) -> list[corpus_mod.AudioFile]:
    """Every candidate file of every role, with speaker ids / index splits filled in."""
    files = []
    for role in inputs.roles:
        root = getattr(inputs, role)
        if root is None:
            continue
        found = corpus_mod.find_audio_files(root, role)
        if role in ("clean", "noise"):  # premixed noisy files: speakers come with the pairing
            source = cfg.speaker_source if role == "clean" else "none"
            if role == "noise" and corpus_mod.find_index(root):
                source = "index"
            corpus_mod.annotate_speakers(found, root, source, cfg.speaker_patterns)
        files += found
    return files


def _scan_files(files: list[corpus_mod.AudioFile], sample_rate: int, workers: int,
                progress: bool) -> list[corpus_mod.ScanResult]:
    """Check every file at ``sample_rate`` (in ``workers`` processes when > 1), in order."""
    paths = [str(f.path) for f in files]
    bar = dict(desc="checking inputs", unit="file", total=len(paths), leave=False,
               disable=not progress)
    if workers > 1 and len(paths) > 1:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            results = pool.map(corpus_mod.scan_audio, paths, [sample_rate] * len(paths),
                               chunksize=max(1, len(paths) // (workers * SCAN_CHUNKS_PER_WORKER)))
            return list(tqdm(results, **bar))
    return [corpus_mod.scan_audio(p, sample_rate) for p in tqdm(paths, **bar)]


def _split_roles(role: str, usable: list[corpus_mod.AudioFile],
                 cfg: CacheConfig) -> dict[str, str]:
    """``{rel: split}`` for the usable files of one role (``test`` rows stay held out)."""
    if role == "rir":
        return {f.rel: "shared" for f in usable}
    parts = corpus_mod.split_files(usable, cfg.val_fraction, cfg.seed)
    out = {f.rel: "test" for f in parts.held_out}
    if role == "noise" and (not cfg.split_noise or not parts.train or not parts.val):
        out.update({f.rel: "shared" for f in parts.train + parts.val})  # too few to split
        return out
    for split in SPLITS:
        out.update({f.rel: split for f in parts.of(split)})
    return out


def scan_corpus(files: list[corpus_mod.AudioFile], cfg: CacheConfig, sample_rate: int,
                workers: int, previous: dict[str, Any] | None,
                progress: bool = True) -> dict[str, Any]:
    """Check every file (reusing ``previous`` results for the same fingerprint) and split them.

    Returns the ``corpus.json`` record: fingerprint, and per role a list of entries
    ``{rel, length, reason, speaker, split}`` where ``split`` is ``train`` / ``val`` / ``test``
    (held out) / ``shared`` (RIRs; noise when it cannot be split).
    """
    fp = fingerprint(corpus_mod.listing(files))
    if (previous and previous.get("fingerprint") == fp
            and previous.get("sample_rate") == sample_rate):
        return previous
    results = _scan_files(files, sample_rate, workers, progress)
    record: dict[str, Any] = {"fingerprint": fp, "sample_rate": sample_rate,
                              "seed": cfg.seed, "files": {}}
    for role in ROLES:
        pairs = [(f, r) for f, r in zip(files, results) if f.role == role]
        usable = [f for f, r in pairs if r.ok]
        split_of = _split_roles(role, usable, cfg)
        record["files"][role] = [
            {"rel": f.rel, "length": r.length, "reason": r.reason, "speaker": f.speaker,
             "split": split_of.get(f.rel) if r.ok else None}
            for f, r in pairs]
    return record


def scan_premixed(files: list[corpus_mod.AudioFile], cfg: CacheConfig, sample_rate: int,
                  tolerance: int, workers: int, previous: dict[str, Any] | None,
                  progress: bool = True) -> dict[str, Any]:
    """:func:`scan_corpus` for premixed clean / noisy pairs: check every file (reusing
    ``previous`` for the same fingerprint), pair them and split the pairs by speaker
    (:func:`cleancodec.pipeline.pairing.premixed_record`; ``tolerance``: largest length
    difference of a pair, in samples at ``sample_rate``)."""
    fp = fingerprint(corpus_mod.listing(files))
    if (previous and previous.get("fingerprint") == fp and "pairing" in previous
            and previous.get("sample_rate") == sample_rate):
        return previous
    results = _scan_files(files, sample_rate, workers, progress)
    return premixed_record(files, results, cfg.val_fraction, cfg.seed, cfg.speaker_source,
                           cfg.speaker_patterns, tolerance, fp, sample_rate)


def read_corpus_record(cache_dir: Path) -> dict[str, Any]:
    """``<cache_dir>/corpus.json`` (raises OSError / ValueError when missing or unreadable)."""
    return json.loads((cache_dir / CORPUS_FILE).read_text())


def write_corpus_record(cache_dir: Path, record: dict[str, Any]) -> None:
    """Write ``<cache_dir>/corpus.json`` atomically."""
    write_json_atomic(cache_dir / CORPUS_FILE, record)


def rejections(corpus_record: dict[str, Any], inputs: Inputs) -> list[Rejection]:
    """Every rejected file with its reason (absolute paths)."""
    out = []
    for role in inputs.roles:
        root = getattr(inputs, role)
        for entry in corpus_record["files"].get(role, []):
            if entry["reason"]:
                out.append(Rejection(str(Path(root) / entry["rel"]), role, entry["reason"]))
    return out


def write_rejected(cache_dir: Path, rejected: list[Rejection]) -> None:
    """``<cache_dir>/rejected.tsv`` (path, role, reason; header row first), written atomically.

    Roles: clean / noise / rir, or for a premixed corpus clean / noisy / rir."""
    with atomic_path(cache_dir / REJECTED_FILE) as tmp, open(tmp, "w") as fh:
        fh.write("\t".join(REJECTED_HEADER) + "\n")
        for r in rejected:
            reason = " ".join(r.reason.split())  # one line, no tabs
            fh.write(f"{r.path}\t{r.role}\t{reason}\n")


__all__ = [
    "CORPUS_FILE", "REJECTED_FILE", "ROLES", "Inputs", "Rejection", "discover",
    "read_corpus_record", "rejections", "resolve_inputs", "scan_corpus", "scan_premixed",
    "write_corpus_record", "write_rejected",
]
