"""Build the latent cache: corpus → windows → mix → encode → shards, plus the manifest.

:func:`build_cache` is the stage function behind ``cleancodec cache``.

How a build runs
----------------
1. *Prepare* (rank 0 only): resolve the input folders (generating the synthetic corpus when the
   profile asks for it), load the codec, find and check every clean / noise / RIR file (results
   cached in ``corpus.json``; bad files go to ``rejected.tsv``), split clean speech by speaker,
   size each split, create the storage and write ``manifest.json`` with every shard ``pending``.
   An existing cache is resumed only when it was made with the same codec, config, input
   folders and corpus files; otherwise it is refused (``--overwrite`` deletes and rebuilds it).
2. *Shards*: window ``k`` of split ``s`` is a pure function of (config, seed, s, k, corpus):
   its random choices come from :func:`pipeline.mix.window_rng`. A shard is ``windows_per_shard``
   consecutive windows; it is mixed, encoded (clean and noisy), staged under a temporary name,
   renamed into place, and only then marked ``done`` in the manifest (atomic rewrite). A killed
   build leaves at most scratch files, which the next run deletes before redoing unfinished shards.
   One process overlaps mixing (next shard) and writing (previous shard) with encoding;
   ``workers > 1`` runs shards in that many processes, each with its own codec copy.
   Under ``torchrun`` rank ``r`` of ``w`` takes the shards whose position in the build order
   is ``r`` modulo ``w``; ranks other than 0 report finished shards through small marker files.
3. *Finalise* (rank 0, after a barrier): counts, bytes, ``complete: true``, the manifest copied
   into the zarr group attributes, and a :class:`BuildSummary`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import multiprocessing as mp
import numpy as np
from tqdm import tqdm

from cleancodec.pipeline import corpus as corpus_mod
from cleancodec.pipeline import shards
from cleancodec.pipeline.audio import read_audio
from cleancodec.pipeline.config import to_dict
from cleancodec.pipeline.atomic import write_json_atomic
from cleancodec.pipeline.manifest import (FORMAT, FORMAT_VERSION, MANIFEST_NAME, STORAGES, ManifestError,
                               load_manifest, save_manifest)
from cleancodec.pipeline.mix import (MixConfig, draw_mix_params, is_mostly_silent, loop_segment, mix,
                          noise_offset, window_rng)
from cleancodec.pipeline.synth import SynthConfig, make_tiny_corpus_from

log = logging.getLogger(__name__)

SPLITS = corpus_mod.SPLITS
CORPUS_KINDS = ("dirs", "synthetic")
ROLES = ("clean", "noise", "rir")
CORPUS_FILE = "corpus.json"
REJECTED_FILE = "rejected.tsv"
MARKER_DIR = ".markers"
RIR_CACHE_SIZE = 256
SECONDS_PER_HOUR = 3600.0
DEMO_HINT_PARTS = ("data", "demo")
OPERATIONAL_KEYS = frozenset({"rank_timeout_minutes"})  # config keys that never change content
VERSION_PACKAGES = ("cleancodec", "torch", "descript-audio-codec", "zarr", "numcodecs",
                    "webdataset", "numpy", "soundfile", "soxr", "scipy")


# --- configuration ---------------------------------------------------------------------------


@dataclass
class CacheConfig:
    """The ``cache`` section of a profile.

    Window counts per split: ``train_windows`` / ``val_windows`` when set, else
    ``train_hours`` / ``val_hours``, else ``coverage`` × the split's clean audio (1.0: about
    every second of speech once). Input folders given on the command line override
    ``clean`` / ``noise`` / ``rir``; ``corpus: synthetic`` generates a corpus under
    ``synthetic_dir`` when no folders are given.
    """

    storage: str = "zarr"
    dtype: str = "float16"
    windows_per_shard: int = 256
    train_windows: int | None = None
    val_windows: int | None = None
    train_hours: float | None = None
    val_hours: float | None = None
    coverage: float = 1.0
    seed: int = 1234
    val_fraction: float = 0.05
    clean: str | None = None
    noise: str | None = None
    rir: str | None = None
    corpus: str = "dirs"
    synthetic_dir: str = "data/tiny_corpus"
    synthetic: SynthConfig = field(default_factory=SynthConfig)
    speaker_source: str = "auto"
    speaker_patterns: list[str] = field(
        default_factory=lambda: list(corpus_mod.DEFAULT_SPEAKER_PATTERNS))
    split_noise: bool = True
    max_draws: int = 100
    compressor: str = "blosc-zstd"
    compression_level: int = 3
    rank_timeout_minutes: float = 120.0
    mix: MixConfig = field(default_factory=MixConfig)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        checks = [
            (self.storage in STORAGES, f"storage must be one of {STORAGES}"),
            (self.dtype in shards.DTYPES, f"dtype must be one of {shards.DTYPES}"),
            (self.windows_per_shard >= 1, "windows_per_shard must be >= 1"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
            (self.corpus in CORPUS_KINDS, f"corpus must be one of {CORPUS_KINDS}"),
            (self.compressor in shards.COMPRESSORS,
             f"compressor must be one of {shards.COMPRESSORS}"),
            (self.max_draws >= 1, "max_draws must be >= 1"),
            (self.coverage > 0, "coverage must be > 0"),
            (self.speaker_source in corpus_mod.SPEAKER_SOURCES,
             f"speaker_source must be one of {corpus_mod.SPEAKER_SOURCES}"),
            (self.mix.snr_min_db <= self.mix.snr_max_db, "mix.snr_min_db > mix.snr_max_db"),
            (self.mix.window_seconds > 0, "mix.window_seconds must be > 0"),
        ]
        for name in ("train_windows", "val_windows", "train_hours", "val_hours"):
            value = getattr(self, name)
            checks.append((value is None or value >= 0, f"{name} must be >= 0"))
        for ok, message in checks:
            if not ok:
                raise ValueError(f"cache config: {message}")


# --- errors and results ----------------------------------------------------------------------


class BuildError(RuntimeError):
    """The cache could not be built."""


class CacheMismatchError(BuildError):
    """The output folder holds a cache made with another codec, config or corpus."""


class NoUsableInputError(BuildError):
    """Every input file was rejected (or none was found)."""


@dataclass
class Rejection:
    path: str
    role: str
    reason: str


@dataclass
class BuildSummary:
    """What a build produced (also recorded under ``counts`` in the manifest)."""

    out_dir: Path
    storage: str
    windows: dict[str, int]
    audio_hours: float
    bytes: int
    bytes_per_audio_hour: float
    rejected: list[Rejection]
    silent_draws_skipped: int
    shards_built: int
    shards_reused: int
    elapsed_s: float
    complete: bool
    random_init: bool
    rank: int = 0
    world: int = 1
    shard_seconds: float = 0.0  # wall time of the mix → encode → write phase alone

    def text(self) -> str:
        """Human-readable multi-line summary."""
        lines = [
            f"cache {self.out_dir} ({self.storage}): "
            + ", ".join(f"{split} {n} windows" for split, n in self.windows.items()),
            f"  audio {self.audio_hours:.3f} h · {self.bytes / 1e6:.1f} MB on disk · "
            f"{self.bytes_per_audio_hour / 1e9:.3f} GB per audio-hour",
            f"  shards built {self.shards_built}"
            + (f" by rank {self.rank} of {self.world}" if self.world > 1 else "")
            + f", reused {self.shards_reused} · "
            f"{self.elapsed_s:.1f} s · silent draws skipped {self.silent_draws_skipped}",
            f"  rejected inputs: {len(self.rejected)}"
            + (f" (see {self.out_dir / REJECTED_FILE})" if self.rejected else ""),
        ]
        lines += [f"    {r.role}: {r.path}: {r.reason}" for r in self.rejected[:20]]
        if len(self.rejected) > 20:
            lines.append(f"    … and {len(self.rejected) - 20} more")
        if not self.complete:
            lines.append("  INCOMPLETE: rerun the same command to finish the missing shards")
        if self.random_init:
            from cleancodec.pipeline.codec import RANDOM_INIT_BANNER

            lines.append(f"  {RANDOM_INIT_BANNER}")
        return "\n".join(lines)


# --- input folders ---------------------------------------------------------------------------


@dataclass
class Inputs:
    """Resolved input folders (absolute) and where they came from."""

    clean: Path
    noise: Path
    rir: Path | None
    corpus: str

    def as_dict(self) -> dict[str, Any]:
        return {"clean": str(self.clean), "noise": str(self.noise),
                "rir": str(self.rir) if self.rir else None, "corpus": self.corpus}


def _missing_folder(role: str, path: Path) -> corpus_mod.CorpusError:
    message = f"{path}: {role} folder not found"
    if all(part in path.parts for part in DEMO_HINT_PARTS):
        message += " — the demo corpus is built by `make demo-data`; run that first"
    else:
        message += f" (give it with --{role} / make {role.upper()}=DIR, or set cache.{role})"
    return corpus_mod.CorpusError(message)


def resolve_inputs(cfg: CacheConfig, clean_dir: str | Path | None = None,
                   noise_dir: str | Path | None = None, rir_dir: str | Path | None = None,
                   generate: bool = True) -> Inputs:
    """Pick the clean / noise / RIR folders: arguments, else the config, else the synthetic corpus.

    With ``corpus: synthetic`` and no folders given, the corpus is generated (or reused) under
    ``cfg.synthetic_dir`` when ``generate`` is true. Raises CorpusError for missing folders.
    """
    clean = clean_dir or cfg.clean
    noise = noise_dir or cfg.noise
    rir = rir_dir or cfg.rir
    kind = "dirs"
    if cfg.corpus == "synthetic" and not (clean_dir or noise_dir):
        root = Path(cfg.synthetic_dir)
        if generate:
            make_tiny_corpus_from(cfg.synthetic, root)
        clean, noise, kind = root / "clean", root / "noise", "synthetic"
    if not clean or not noise:
        raise corpus_mod.CorpusError(
            "no clean/noise folders: pass --clean DIR --noise DIR (make CLEAN=… NOISE=…), set "
            "cache.clean / cache.noise, or use cache.corpus: synthetic")
    paths = {"clean": Path(clean).absolute(), "noise": Path(noise).absolute(),
             "rir": Path(rir).absolute() if rir else None}
    for role, path in paths.items():
        if path is not None and not path.is_dir():
            raise _missing_folder(role, path)
    return Inputs(clean=paths["clean"], noise=paths["noise"], rir=paths["rir"], corpus=kind)


# --- torchrun ranks --------------------------------------------------------------------------


@dataclass
class RankContext:
    """This process's place in a ``torchrun`` launch (world 1 when not launched by it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    owns_group: bool = False

    @classmethod
    def from_env(cls, timeout_minutes: float) -> "RankContext":
        """Read ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``LOCAL_WORLD_SIZE``; join a gloo
        group (for barriers only) when the world is larger than one."""
        env = os.environ
        ctx = cls(rank=int(env.get("RANK", 0)), world=int(env.get("WORLD_SIZE", 1)),
                  local_rank=int(env.get("LOCAL_RANK", 0)),
                  local_world=int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", 1))))
        if ctx.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(
                    "gloo", rank=ctx.rank, world_size=ctx.world,
                    timeout=_dt.timedelta(minutes=timeout_minutes))
                ctx.owns_group = True
        return ctx

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def share_error(self, error: str | None) -> None:
        """Rank 0 tells every rank whether preparing failed; the others raise in that case."""
        if self.world > 1:
            import torch.distributed as dist

            box = [error]
            dist.broadcast_object_list(box, src=0)
            error = box[0]
        if error is not None and not self.is_main:
            raise BuildError(f"rank 0 failed to prepare the cache: {error}")

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


# --- corpus plan -----------------------------------------------------------------------------


@dataclass
class Source:
    """A usable input file: ``rel`` to its folder, absolute ``path``, ``length`` at 16 kHz."""

    rel: str
    path: str
    length: int


@dataclass
class SplitPlan:
    """Which sources a split draws from and how many windows it has."""

    name: str
    windows: int
    clean: np.ndarray   # int64 indices into Plan.clean
    noise: np.ndarray   # int64 indices into Plan.noise
    clean_cum: np.ndarray = field(default_factory=lambda: np.zeros(0))  # cumulative lengths

    def __post_init__(self) -> None:
        self.clean = np.asarray(self.clean, dtype=np.int64)
        self.noise = np.asarray(self.noise, dtype=np.int64)


@dataclass
class Plan:
    """Everything a worker needs to make any window of the cache (picklable)."""

    seed: int
    mix: MixConfig
    max_draws: int
    sample_rate: int
    window_samples: int
    frames: int
    latent_dim: int
    windows_per_shard: int
    storage: str
    dtype: str
    clean: list[Source]
    noise: list[Source]
    rir: list[Source]
    splits: dict[str, SplitPlan]
    noise_shared: bool = False

    def shard_tasks(self) -> list["ShardTask"]:
        """Every shard of every split, in build order (train first)."""
        tasks = []
        for name, sp in self.splits.items():
            for index in range(math.ceil(sp.windows / self.windows_per_shard)):
                start = index * self.windows_per_shard
                tasks.append(ShardTask(name, index, start,
                                       min(self.windows_per_shard, sp.windows - start)))
        return tasks


@dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    start: int
    windows: int


def _scan_files(files: list[corpus_mod.AudioFile], sample_rate: int, workers: int,
                progress: bool) -> list[corpus_mod.ScanResult]:
    paths = [str(f.path) for f in files]
    bar = dict(desc="checking inputs", unit="file", total=len(paths), leave=False,
               disable=not progress)
    if workers > 1 and len(paths) > 1:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            results = pool.map(corpus_mod.scan_audio, paths, [sample_rate] * len(paths),
                               chunksize=max(1, len(paths) // (workers * 8)))
            return list(tqdm(results, **bar))
    return [corpus_mod.scan_audio(p, sample_rate) for p in tqdm(paths, **bar)]


def discover(inputs: Inputs, cfg: CacheConfig) -> list[corpus_mod.AudioFile]:
    """Every candidate file of every role, with speaker ids / index splits filled in."""
    files = []
    for role in ROLES:
        root = getattr(inputs, role)
        if root is None:
            continue
        found = corpus_mod.find_audio_files(root, role)
        if role in ("clean", "noise"):
            source = cfg.speaker_source if role == "clean" else "none"
            if role == "noise" and corpus_mod.find_index(root):
                source = "index"
            corpus_mod.annotate_speakers(found, root, source, cfg.speaker_patterns)
        files += found
    return files


def scan_corpus(files: list[corpus_mod.AudioFile], cfg: CacheConfig, sample_rate: int,
                workers: int, previous: dict[str, Any] | None,
                progress: bool = True) -> dict[str, Any]:
    """Check every file (reusing ``previous`` results for the same fingerprint) and split them.

    Returns the ``corpus.json`` record: fingerprint, and per role a list of entries
    ``{rel, length, reason, speaker, split}`` where ``split`` is ``train`` / ``val`` / ``test``
    (held out) / ``shared`` (RIRs; noise when it cannot be split).
    """
    fp = corpus_mod.fingerprint(files)
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


def rejections(corpus_record: dict[str, Any], inputs: Inputs) -> list[Rejection]:
    """Every rejected file with its reason (absolute paths)."""
    out = []
    for role in ROLES:
        root = getattr(inputs, role)
        for entry in corpus_record["files"].get(role, []):
            if entry["reason"]:
                out.append(Rejection(str(Path(root) / entry["rel"]), role, entry["reason"]))
    return out


def _split_windows(cfg: CacheConfig, split: str, clean_samples: int, window_samples: int,
                   sample_rate: int) -> int:
    explicit = getattr(cfg, f"{split}_windows")
    if explicit is not None:
        return int(explicit)
    hours = getattr(cfg, f"{split}_hours")
    if hours is not None:
        return math.ceil(hours * SECONDS_PER_HOUR * sample_rate / window_samples)
    if clean_samples == 0:
        return 0
    return max(1, int(cfg.coverage * clean_samples // window_samples))


def make_plan(cfg: CacheConfig, corpus_record: dict[str, Any], inputs: Inputs,
              constants: dict[str, Any]) -> Plan:
    """Turn a ``corpus.json`` record into a :class:`Plan` (pure; every rank computes the same).

    Raises NoUsableInputError when no clean speech for training or no noise is usable.
    """
    sr = int(constants["sample_rate"])
    window = int(round(cfg.mix.window_seconds * sr))
    frames = -(-window // int(constants["hop_length"]))
    sources: dict[str, list[Source]] = {}
    split_of: dict[str, list[str]] = {}
    for role in ROLES:
        root = getattr(inputs, role)
        entries = [e for e in corpus_record["files"].get(role, []) if e["reason"] is None
                   and e["split"] != "test"]
        sources[role] = [Source(e["rel"], str(Path(root) / e["rel"]), int(e["length"]))
                         for e in entries]
        split_of[role] = [e["split"] for e in entries]
    if not sources["clean"]:
        raise NoUsableInputError(f"{inputs.clean}: no usable clean speech (see {REJECTED_FILE})")
    if not sources["noise"]:
        raise NoUsableInputError(f"{inputs.noise}: no usable noise (see {REJECTED_FILE})")
    splits = {}
    for split in SPLITS:
        clean_idx = [i for i, s in enumerate(split_of["clean"]) if s == split]
        noise_idx = [i for i, s in enumerate(split_of["noise"]) if s in (split, "shared")]
        total = sum(sources["clean"][i].length for i in clean_idx)
        n = _split_windows(cfg, split, total, window, sr) if clean_idx else 0
        wanted = cfg.val_windows or cfg.val_hours or (
            cfg.val_windows is None and cfg.val_hours is None and cfg.val_fraction > 0)
        if split == "val" and not clean_idx and wanted:
            log.warning("%s: no speaker is left for the val split (one speaker, or "
                        "val_fraction 0); the cache has no val windows", inputs.clean)
        lengths = np.array([sources["clean"][i].length for i in clean_idx], dtype=np.float64)
        splits[split] = SplitPlan(split, n, clean_idx, noise_idx, np.cumsum(lengths))
    if not len(splits["train"].clean):
        raise NoUsableInputError(f"{inputs.clean}: no usable clean speech for the train split")
    if splits["train"].windows == 0:
        raise BuildError("the train split would have 0 windows (cache.train_windows / "
                         "cache.train_hours / cache.coverage)")
    return Plan(seed=cfg.seed, mix=cfg.mix, max_draws=cfg.max_draws, sample_rate=sr,
                window_samples=window, frames=frames, latent_dim=int(constants["latent_dim"]),
                windows_per_shard=cfg.windows_per_shard, storage=cfg.storage, dtype=cfg.dtype,
                clean=sources["clean"], noise=sources["noise"], rir=sources["rir"],
                splits=splits, noise_shared=all(s == "shared" for s in split_of["noise"]))


# --- one window ------------------------------------------------------------------------------


@dataclass
class Window:
    """One mixed window: ``clean`` (target) and ``noisy`` float32 ``[T]`` plus its metadata."""

    clean: np.ndarray
    noisy: np.ndarray
    meta: dict[str, Any]
    silent_draws: int


@functools.lru_cache(maxsize=RIR_CACHE_SIZE)
def _read_rir(path: str, sample_rate: int) -> np.ndarray:
    return read_audio(path, sample_rate)


def _noise_segment(src: Source, length: int, rng: np.random.Generator,
                   sample_rate: int) -> tuple[np.ndarray, int]:
    """A ``length``-sample noise segment from a random offset; short noise loops around."""
    offset = noise_offset(src.length, length, rng)
    if src.length >= length:
        return corpus_mod.read_segment(src.path, offset, length, sample_rate), offset
    whole = corpus_mod.read_segment(src.path, 0, src.length, sample_rate)
    return loop_segment(whole, offset, length), offset


def _clean_segment(plan: Plan, sp: SplitPlan,
                   rng: np.random.Generator) -> tuple[int, int, np.ndarray, int]:
    """Draw (source, offset) by duration until the segment is not mostly silent."""
    length = plan.window_samples
    for attempt in range(plan.max_draws):
        pick = int(np.searchsorted(sp.clean_cum, rng.uniform(0, sp.clean_cum[-1]), side="right"))
        index = int(sp.clean[min(pick, len(sp.clean) - 1)])
        src = plan.clean[index]
        offset = int(rng.integers(0, max(1, src.length - length + 1)))
        audio = corpus_mod.read_segment(src.path, offset, length, plan.sample_rate)
        if not is_mostly_silent(audio, plan.sample_rate, plan.mix):
            return index, offset, audio, attempt
    raise BuildError(
        f"split {sp.name}: no window with enough active speech in {plan.max_draws} draws "
        f"(mix.min_active_fraction={plan.mix.min_active_fraction}, "
        f"mix.silence_threshold_db={plan.mix.silence_threshold_db}); "
        "is the clean speech that quiet?")


def make_window(plan: Plan, split: str, k: int) -> Window:
    """Window ``k`` of ``split``: a pure function of the plan, the seed, ``split`` and ``k``.

    ``window_seed`` (a uint64 drawn from ``window_rng(seed, split, k)``) seeds three
    independent generators: clean source/offset, noise source/offset, and mixing (SNR, level,
    reverb, RIR choice).
    """
    sp = plan.splits[split]
    window_seed = int(window_rng(plan.seed, split, k).integers(0, 2**64, dtype=np.uint64))
    clean_rng, noise_rng, mix_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(window_seed).spawn(3))
    clean_index, clean_offset, clean, silent = _clean_segment(plan, sp, clean_rng)
    noise_index = int(sp.noise[int(noise_rng.integers(len(sp.noise)))])
    noise, noise_offset = _noise_segment(plan.noise[noise_index], plan.window_samples,
                                         noise_rng, plan.sample_rate)
    params = draw_mix_params(mix_rng, plan.mix, have_rirs=bool(plan.rir))
    rir_index, rir = -1, None
    if params.reverb:
        rir_index = int(mix_rng.integers(len(plan.rir)))
        rir = _read_rir(plan.rir[rir_index].path, plan.sample_rate)
    result = mix(clean, noise, params.snr_db, params.level_dbfs, rir=rir, cfg=plan.mix)
    meta = {"snr_db": result.snr_db, "level_dbfs": result.level_dbfs,
            "reverb": int(result.reverb), "window_seed": window_seed,
            "clean_source": clean_index, "noise_source": noise_index,
            "clean_offset": clean_offset, "noise_offset": noise_offset,
            "rir_source": rir_index, "clipped": int(result.clipped)}
    return Window(result.clean, result.noisy, meta, silent)


# --- one shard -------------------------------------------------------------------------------


@dataclass
class MixedShard:
    task: ShardTask
    clean: np.ndarray   # float32 [n x T]
    noisy: np.ndarray   # float32 [n x T]
    meta: dict[str, np.ndarray]
    silent_draws: int


def mix_shard(plan: Plan, task: ShardTask) -> MixedShard:
    """Mix the windows of one shard: waves ``[n x T]`` and metadata arrays ``[n]``."""
    rows = range(task.start, task.start + task.windows)
    windows = [make_window(plan, task.split, k) for k in rows]
    meta = {name: np.array([w.meta[name] for w in windows], dtype=dtype)
            for name, dtype in shards.META_FIELDS.items()}
    return MixedShard(task, np.stack([w.clean for w in windows]),
                      np.stack([w.noisy for w in windows]), meta,
                      sum(w.silent_draws for w in windows))


def encode_shard(codec: Any, mixed: MixedShard, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Encode clean and noisy waves ``[n x T]`` into two ``[n x D x F]`` arrays in ``dtype``.

    Works batch by batch (``codec.cfg.batch_size`` windows) into preallocated arrays, so a shard
    never holds a float32 copy of all its latents. Raises BuildError when a latent is not finite
    after the cast (float16 overflow).
    """
    batch = max(1, int(codec.cfg.batch_size))
    out = []
    for name, waves in (("clean", mixed.clean), ("noisy", mixed.noisy)):
        latents: np.ndarray | None = None
        for start in range(0, len(waves), batch):
            z = codec.encode(waves[start:start + batch]).cpu().numpy()
            if latents is None:
                latents = np.empty((len(waves), *z.shape[1:]), dtype=dtype)
            part = latents[start:start + len(z)]
            part[...] = z
            if not np.all(np.isfinite(part)):
                raise BuildError(
                    f"{mixed.task.split} shard {mixed.task.index} ({name}): latents overflow "
                    f"{dtype} (max |z| = {float(np.max(np.abs(z))):.3g}); use dtype float32")
        out.append(latents)
    return out[0], out[1]


def _wds_metas(plan: Plan, mixed: MixedShard) -> list[dict[str, Any]]:
    metas = []
    for i in range(mixed.task.windows):
        row = {name: mixed.meta[name][i].item() for name in shards.META_FIELDS}
        row["clean_source"] = plan.clean[row["clean_source"]].rel
        row["noise_source"] = plan.noise[row["noise_source"]].rel
        row["rir_source"] = plan.rir[row["rir_source"]].rel if row["rir_source"] >= 0 else None
        row["split"], row["row"] = mixed.task.split, mixed.task.start + i
        metas.append(row)
    return metas


def write_shard(plan: Plan, cache_dir: Path, mixed: MixedShard,
                latents: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Store one encoded shard (staged, then renamed) and return its manifest record."""
    task = mixed.task
    clean, noisy = latents
    if plan.storage == "zarr":
        files = shards.write_zarr_shard(cache_dir, task.split, task.index,
                                        plan.windows_per_shard, clean, noisy, mixed.meta)
        main_file = shards.zarr_split_path(cache_dir, task.split).name
    else:
        files = [shards.write_wds_shard(cache_dir, task.split, task.index, clean, noisy,
                                        _wds_metas(plan, mixed))]
        main_file = files[0].path
    return {"index": task.index, "status": "done", "windows": task.windows,
            "sha256": shards.combined_sha256(files), "file": main_file,
            "files": [dataclasses.asdict(f) for f in files],
            "bytes": sum(f.bytes for f in files), "silent_draws": mixed.silent_draws,
            "clipped": int(mixed.meta["clipped"].sum())}


# --- manifest bookkeeping --------------------------------------------------------------------


class Ledger:
    """Marks shards done: rank 0 rewrites the manifest; other ranks drop marker files that
    rank 0 folds in (each write atomic)."""

    def __init__(self, cache_dir: Path, manifest: dict[str, Any], ctx: RankContext):
        self.cache_dir = cache_dir
        self.manifest = manifest
        self.ctx = ctx

    @property
    def marker_dir(self) -> Path:
        return self.cache_dir / MARKER_DIR

    def _apply(self, split: str, record: dict[str, Any]) -> None:
        self.manifest["splits"][split]["shards"][record["index"]] = record

    def mark_done(self, split: str, record: dict[str, Any]) -> None:
        if not self.ctx.is_main:
            write_json_atomic(self.marker_dir / f"{split}-{record['index']:06d}.json",
                              {"split": split, "record": record})
            return
        self._apply(split, record)
        self.sync()

    def sync(self) -> int:
        """Fold in other ranks' marker files, save the manifest, then delete those markers
        (in that order, so a kill at any point loses no finished shard)."""
        markers = sorted(self.marker_dir.glob("*.json")) if self.marker_dir.is_dir() else []
        for path in markers:
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):  # unreadable marker: that shard is simply redone
                continue
            self._apply(entry["split"], entry["record"])
        save_manifest(self.cache_dir, self.manifest)
        for path in markers:
            path.unlink(missing_ok=True)
        return len(markers)

    def pending(self, plan: Plan) -> list[ShardTask]:
        done = {(split, s["index"]) for split, sp in self.manifest["splits"].items()
                for s in sp["shards"] if s.get("status") == "done"}
        return [t for t in plan.shard_tasks() if (t.split, t.index) not in done]


# --- the manifest ----------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the cache, plus Python's."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_manifest(cfg: CacheConfig, plan: Plan, constants: dict[str, Any], inputs: Inputs,
                 corpus_record: dict[str, Any], codec_settings: dict[str, Any],
                 n_rejected: int) -> dict[str, Any]:
    """The manifest of a fresh build, every shard ``pending`` (layout: pipeline.manifest)."""
    from cleancodec.pipeline.codec import RANDOM_INIT_BANNER

    speakers = {e["rel"]: e["speaker"] for e in corpus_record["files"]["clean"]}
    splits = {}
    for name, sp in plan.splits.items():
        n_shards = math.ceil(sp.windows / plan.windows_per_shard)
        entry: dict[str, Any] = {
            "windows": sp.windows, "windows_per_shard": plan.windows_per_shard,
            "n_shards": n_shards, "clean_files": len(sp.clean), "noise_files": len(sp.noise),
            "speakers": len({speakers.get(plan.clean[i].rel) or f"file:{plan.clean[i].rel}"
                             for i in sp.clean}),
            "hours": sp.windows * cfg.mix.window_seconds / SECONDS_PER_HOUR,
            "shards": [{"index": i, "status": "pending",
                        "windows": min(plan.windows_per_shard,
                                       sp.windows - i * plan.windows_per_shard)}
                       for i in range(n_shards)]}
        if plan.storage == "zarr":
            entry["path"] = f"{name}.zarr"
        else:
            entry["pattern"] = shards.WDS_PATTERN.format(split=name)
        splits[name] = entry
    random_init = constants["identity"].get("kind") == "random-init"
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "storage": plan.storage,
        "codec": constants, "codec_settings": codec_settings,
        "random_init": random_init,
        "notice": RANDOM_INIT_BANNER if random_init else None,
        "window": {"seconds": cfg.mix.window_seconds, "samples": plan.window_samples,
                   "frames": plan.frames},
        "dtype": plan.dtype, "seed": cfg.seed, "mix": to_dict(cfg.mix), "config": to_dict(cfg),
        "inputs": inputs.as_dict(), "corpus_fingerprint": corpus_record["fingerprint"],
        "sources": {role: [s.rel for s in getattr(plan, role)] for role in ROLES},
        "noise_shared_between_splits": plan.noise_shared,
        "splits": splits,
        "counts": {"windows": {n: sp.windows for n, sp in plan.splits.items()},
                   "rejected": n_rejected},
        "complete": False, "created": _now(), "versions": package_versions(),
    }


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def compare_build(manifest: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Differences between an existing cache and this run (empty list: same build)."""
    from cleancodec.pipeline.codec import describe_identity, identities_match

    diffs = []
    have_id, want_id = manifest.get("codec", {}).get("identity", {}), wanted["codec"]["identity"]
    if not identities_match(have_id, want_id):
        diffs.append(f"codec: cache has {describe_identity(have_id)}, this run "
                     f"{describe_identity(want_id)}")
    if manifest.get("codec_settings") != wanted["codec_settings"]:
        diffs.append(f"codec settings: cache {manifest.get('codec_settings')}, "
                     f"this run {wanted['codec_settings']}")
    have_cfg, want_cfg = _flatten(manifest.get("config", {})), _flatten(wanted["config"])
    for key in sorted((set(have_cfg) | set(want_cfg)) - OPERATIONAL_KEYS):
        if have_cfg.get(key) != want_cfg.get(key):
            diffs.append(f"config {key}: cache {have_cfg.get(key)!r}, "
                         f"this run {want_cfg.get(key)!r}")
    for role, path in wanted["inputs"].items():
        if manifest.get("inputs", {}).get(role) != path:
            diffs.append(f"{role} input: cache {manifest.get('inputs', {}).get(role)}, "
                         f"this run {path}")
    if manifest.get("corpus_fingerprint") != wanted["corpus_fingerprint"]:
        diffs.append("input files changed (added, removed or modified) since the cache was made")
    return diffs


# --- the output folder -----------------------------------------------------------------------


_SPLIT_RE = "|".join(SPLITS)
_OURS = re.compile(
    rf"^(?:{re.escape(MANIFEST_NAME)}|{re.escape(CORPUS_FILE)}|{re.escape(REJECTED_FILE)}"
    rf"|{re.escape(shards.TMP_DIR)}|{re.escape(MARKER_DIR)}"
    rf"|(?:{_SPLIT_RE})\.zarr|(?:{_SPLIT_RE})-\d{{6}}\.tar)$")
_SCRATCH = re.compile(
    rf"^\.(?:(?:{_SPLIT_RE})\.zarr|(?:{_SPLIT_RE})-\d{{6}}\.tar)\.[0-9a-f]+\.partial$"
    rf"|^\.(?:{re.escape(MANIFEST_NAME)}|{re.escape(CORPUS_FILE)}|{re.escape(REJECTED_FILE)})"
    rf"\..+\.tmp$")


def _is_ours(name: str) -> bool:
    """True for names a cleancodec cache build creates in its folder (and its scratch files)."""
    return bool(_OURS.match(name) or _SCRATCH.match(name))


def clear_cache_dir(out_dir: Path) -> None:
    """Delete cleancodec's cache files in ``out_dir`` (nothing else)."""
    for entry in out_dir.iterdir() if out_dir.is_dir() else []:
        if _is_ours(entry.name):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _clear_scratch(out_dir: Path) -> None:
    """Delete what a killed build may have left half-written (never a live file)."""
    shutil.rmtree(shards.scratch_dir(out_dir), ignore_errors=True)
    for entry in out_dir.iterdir():
        if _SCRATCH.match(entry.name):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _check_out_dir(out_dir: Path, overwrite: bool) -> dict[str, Any] | None:
    """The existing manifest to resume from, or None for a fresh build (after clearing)."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise BuildError(f"{out_dir}: exists and is not a folder")
    foreign = sorted(e.name for e in out_dir.iterdir() if not _is_ours(e.name))
    if foreign:
        raise BuildError(f"{out_dir}: folder holds files that are not a cleancodec cache "
                         f"({', '.join(foreign[:5])}); choose an empty or new --out folder")
    if overwrite:
        clear_cache_dir(out_dir)
        return None
    if not (out_dir / MANIFEST_NAME).is_file():
        clear_cache_dir(out_dir)  # leftovers of a build killed before its manifest existed
        return None
    try:
        return load_manifest(out_dir)
    except ManifestError as exc:
        raise CacheMismatchError(f"{exc}; pass --overwrite to delete and rebuild it") from exc


def _verify_done(cache_dir: Path, manifest: dict[str, Any], full: bool) -> int:
    """Reset done shards whose files are missing or changed to pending; returns how many."""
    reset = 0
    for split in manifest["splits"].values():
        for i, record in enumerate(split["shards"]):
            if record.get("status") != "done":
                continue
            for f in record.get("files", []):
                path = cache_dir / f["path"]
                if (not path.is_file() or path.stat().st_size != f["bytes"]
                        or (full and shards.sha256_file(path) != f["sha256"])):
                    log.warning("%s: missing or changed; shard %d will be rebuilt",
                                path, record["index"])
                    split["shards"][i] = {"index": record["index"], "status": "pending",
                                          "windows": record["windows"]}
                    reset += 1
                    break
    return reset


def _write_rejected(out_dir: Path, rejected: list[Rejection]) -> None:
    """``rejected.tsv`` (path, role, reason), written to a temporary name and renamed."""
    tmp = out_dir / f".{REJECTED_FILE}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write("path\trole\treason\n")
        for r in rejected:
            reason = " ".join(r.reason.split())  # one line, no tabs
            fh.write(f"{r.path}\t{r.role}\t{reason}\n")
    os.replace(tmp, out_dir / REJECTED_FILE)


# --- workers ---------------------------------------------------------------------------------


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def worker_codec_config(codec_cfg: Any, ctx: RankContext, workers: int) -> Any:
    """This process's codec settings: threads shared among local processes, one GPU per rank."""
    updates: dict[str, Any] = {}
    procs = max(1, workers) * max(1, ctx.local_world)
    if not codec_cfg.num_threads and procs > 1:
        updates["num_threads"] = max(1, _cpu_count() // procs)
    if codec_cfg.device == "auto" and ctx.local_world > 1:
        import torch

        if torch.cuda.is_available():
            updates["device"] = f"cuda:{ctx.local_rank % torch.cuda.device_count()}"
    return dataclasses.replace(codec_cfg, **updates) if updates else codec_cfg


_WORKER: dict[str, Any] = {}  # per worker process: plan, codec, cache dir (set by _init_worker)


def _init_worker(plan: Plan, codec_cfg: Any, cache_dir: str) -> None:
    from cleancodec.pipeline.codec import load_codec

    _WORKER.update(plan=plan, codec=load_codec(codec_cfg), cache_dir=Path(cache_dir))


def _run_task_in_worker(task: ShardTask) -> tuple[str, dict[str, Any]]:
    plan, codec, cache_dir = _WORKER["plan"], _WORKER["codec"], _WORKER["cache_dir"]
    mixed = mix_shard(plan, task)
    return task.split, write_shard(plan, cache_dir, mixed, encode_shard(codec, mixed, plan.dtype))


class _Progress:
    """tqdm over windows with an audio-hours-per-hour rate."""

    def __init__(self, total: int, done: int, window_seconds: float, enabled: bool):
        self.bar = tqdm(total=total, initial=done, unit="win", desc="cache", disable=not enabled,
                        dynamic_ncols=True)
        self.window_seconds = window_seconds
        self.start = time.perf_counter()
        self.count = 0

    def update(self, windows: int) -> None:
        self.count += windows
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.count * self.window_seconds / elapsed:.2f} audio-h/h")
        self.bar.update(windows)

    def close(self) -> None:
        self.bar.close()


def run_tasks_inline(plan: Plan, codec: Any, cache_dir: Path, tasks: list[ShardTask],
                     on_done: Any) -> None:
    """Build ``tasks`` in this process: mixing the next shard and writing the previous one
    run in background threads while the codec encodes the current one."""
    if not tasks:
        return
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="cache-io") as pool:
        next_mix: Future = pool.submit(mix_shard, plan, tasks[0])
        writing: tuple[str, Future] | None = None
        for i in range(len(tasks)):
            mixed = next_mix.result()
            if i + 1 < len(tasks):
                next_mix = pool.submit(mix_shard, plan, tasks[i + 1])
            latents = encode_shard(codec, mixed, plan.dtype)
            if writing is not None:
                on_done(writing[0], writing[1].result())
            writing = (mixed.task.split, pool.submit(write_shard, plan, cache_dir, mixed, latents))
        on_done(writing[0], writing[1].result())


def run_tasks_pool(plan: Plan, codec_cfg: Any, cache_dir: Path, tasks: list[ShardTask],
                   workers: int, on_done: Any) -> None:
    """Build ``tasks`` in ``workers`` processes, each with its own codec."""
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(plan, codec_cfg, str(cache_dir))) as pool:
        futures = [pool.submit(_run_task_in_worker, t) for t in tasks]
        try:
            for future in as_completed(futures):
                on_done(*future.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise


# --- the stage -------------------------------------------------------------------------------


@dataclass
class _Prepared:
    plan: Plan
    manifest: dict[str, Any]
    rejected: list[Rejection]


def _prepare(cfg: CacheConfig, codec: Any, inputs: Inputs, out_dir: Path, overwrite: bool,
             workers: int, verify: bool, progress: bool) -> _Prepared:
    existing = _check_out_dir(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_scratch(out_dir)
    constants = codec.constants()
    codec_settings = {"bf16": bool(codec.cfg.bf16)}
    files = discover(inputs, cfg)
    previous = None
    if existing is not None:
        wanted = {"codec": constants, "codec_settings": codec_settings, "config": to_dict(cfg),
                  "inputs": inputs.as_dict(), "corpus_fingerprint": corpus_mod.fingerprint(files)}
        diffs = compare_build(existing, wanted)
        if diffs:
            raise CacheMismatchError(
                f"{out_dir}: holds a cache built with another codec, config or corpus:\n  - "
                + "\n  - ".join(diffs[:12])
                + "\nUse another --out folder, or --overwrite to delete and rebuild this one.")
        try:
            previous = json.loads((out_dir / CORPUS_FILE).read_text())
        except (OSError, ValueError):
            previous = None
    record = scan_corpus(files, cfg, constants["sample_rate"], workers, previous, progress)
    rejected = rejections(record, inputs)
    write_json_atomic(out_dir / CORPUS_FILE, record)
    _write_rejected(out_dir, rejected)  # before planning, so "no usable input" still lists why
    plan = make_plan(cfg, record, inputs, constants)
    if existing is None:
        manifest = new_manifest(cfg, plan, constants, inputs, record, codec_settings,
                                len(rejected))
    else:
        manifest = existing
        manifest["complete"] = False
    for name, sp in plan.splits.items():
        path = shards.zarr_split_path(out_dir, name)
        if plan.storage == "zarr" and sp.windows and not path.is_dir():
            shards.create_zarr_split(path, sp.windows, plan.latent_dim, plan.frames,
                                     plan.windows_per_shard, plan.dtype, cfg.compressor,
                                     cfg.compression_level)
    Ledger(out_dir, manifest, RankContext()).sync()
    if existing is not None and _verify_done(out_dir, manifest, verify):
        save_manifest(out_dir, manifest)
    return _Prepared(plan, manifest, rejected)


def _finalise(out_dir: Path, plan: Plan, ledger: Ledger) -> dict[str, Any]:
    ledger.sync()
    manifest = ledger.manifest
    records = [s for sp in manifest["splits"].values() for s in sp["shards"]]
    complete = all(s.get("status") == "done" for s in records)
    total_windows = sum(sp.windows for sp in plan.splits.values())
    hours = total_windows * plan.window_samples / plan.sample_rate / SECONDS_PER_HOUR
    size = sum(s.get("bytes", 0) for s in records)
    manifest["counts"].update({
        "windows": {n: sp.windows for n, sp in plan.splits.items()},
        "audio_hours": hours, "bytes": size,
        "bytes_per_audio_hour": size / hours if hours else 0.0,
        "silent_draws_skipped": sum(s.get("silent_draws", 0) for s in records),
        "clipped_windows": sum(s.get("clipped", 0) for s in records),
        "shards_done": sum(s.get("status") == "done" for s in records),
        "shards_total": len(records)})
    manifest["complete"] = complete
    if complete:
        manifest["completed"] = _now()
    save_manifest(out_dir, manifest)
    if plan.storage == "zarr" and complete:
        for name, sp in plan.splits.items():
            if sp.windows:
                shards.set_zarr_attributes(out_dir, name, {"manifest": manifest})
    return manifest


def build_cache(cfg: CacheConfig, codec_cfg: Any, clean_dir: str | Path | None = None,
                noise_dir: str | Path | None = None, rir_dir: str | Path | None = None,
                out_dir: str | Path = "data/cache", overwrite: bool = False, workers: int = 1,
                verify: bool = False, progress: bool = True) -> BuildSummary:
    """Build (or resume) the latent cache in ``out_dir``.

    Parameters
    ----------
    cfg : the ``cache`` section (window counts, storage, dtype, mixing, seed…).
    codec_cfg : ``pipeline.codec.CodecConfig`` of the frozen DAC encoder.
    clean_dir, noise_dir, rir_dir : input folders; default ``cfg.clean`` / ``cfg.noise`` /
        ``cfg.rir`` or, with ``cfg.corpus == "synthetic"``, the generated corpus.
    out_dir : the cache folder (``manifest.json``, ``<split>.zarr`` or ``<split>-%06d.tar``,
        ``corpus.json``, ``rejected.tsv``).
    overwrite : delete an existing cache made with another codec/config instead of refusing.
    workers : processes on this machine (each loads its own codec; torch threads are shared out).
    verify : on resume, re-hash every done shard instead of checking sizes only.
    progress : show tqdm bars.

    Returns
    -------
    BuildSummary (on ranks other than 0 under torchrun: that rank's share only).

    Raises
    ------
    CacheMismatchError, NoUsableInputError, CorpusError, BuildError, CodecWeightsError.
    """
    from cleancodec.pipeline.codec import load_codec

    cfg.validate()
    if workers < 1:
        raise ValueError("workers must be >= 1")
    started = time.perf_counter()
    out_dir = Path(out_dir).absolute()
    ctx = RankContext.from_env(cfg.rank_timeout_minutes)
    try:
        error, prepared, inputs = None, None, None
        if ctx.is_main:
            try:
                inputs = resolve_inputs(cfg, clean_dir, noise_dir, rir_dir)
                codec = load_codec(worker_codec_config(codec_cfg, ctx, workers))
                prepared = _prepare(cfg, codec, inputs, out_dir, overwrite, workers, verify,
                                    progress)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                ctx.share_error(error)
                raise
        ctx.share_error(error)
        if not ctx.is_main:
            inputs = resolve_inputs(cfg, clean_dir, noise_dir, rir_dir, generate=False)
            codec = load_codec(worker_codec_config(codec_cfg, ctx, workers))
            manifest = load_manifest(out_dir)
            record = json.loads((out_dir / CORPUS_FILE).read_text())
            plan = make_plan(cfg, record, inputs, manifest["codec"])
            prepared = _Prepared(plan, manifest, rejections(record, inputs))
        return _build_shards(prepared, codec, codec_cfg, ctx, out_dir, workers, progress, started)
    finally:
        ctx.close()


def _build_shards(prepared: _Prepared, codec: Any, codec_cfg: Any, ctx: RankContext,
                  out_dir: Path, workers: int, progress: bool, started: float) -> BuildSummary:
    plan, manifest = prepared.plan, prepared.manifest
    ledger = Ledger(out_dir, manifest, ctx)
    all_tasks = plan.shard_tasks()
    pending = set(ledger.pending(plan))
    mine = [t for pos, t in enumerate(all_tasks) if pos % ctx.world == ctx.rank and t in pending]
    done_windows = sum(t.windows for t in all_tasks if t not in pending)
    if ctx.world == 1:
        bar = _Progress(sum(t.windows for t in all_tasks), done_windows,
                        plan.window_samples / plan.sample_rate, progress)
    else:  # one bar, on rank 0, for its own share
        bar = _Progress(sum(t.windows for t in mine), 0, plan.window_samples / plan.sample_rate,
                        progress and ctx.is_main)
    built = 0
    shard_start = time.perf_counter()

    def on_done(split: str, record: dict[str, Any]) -> None:
        nonlocal built
        record["rank"] = ctx.rank
        ledger.mark_done(split, record)
        bar.update(record["windows"])
        built += 1

    try:
        if workers > 1 and len(mine) > 1:
            run_tasks_pool(plan, worker_codec_config(codec_cfg, ctx, workers), out_dir, mine,
                           min(workers, len(mine)), on_done)
        else:
            run_tasks_inline(plan, codec, out_dir, mine, on_done)
    finally:
        bar.close()
    shard_seconds = time.perf_counter() - shard_start
    ctx.barrier()
    if ctx.is_main:
        manifest = _finalise(out_dir, plan, ledger)
    summary = _summary(out_dir, plan, manifest, prepared.rejected, built,
                       len(all_tasks) - len(pending), time.perf_counter() - started, ctx.rank)
    return dataclasses.replace(summary, shard_seconds=shard_seconds, world=ctx.world)


def _summary(out_dir: Path, plan: Plan, manifest: dict[str, Any], rejected: list[Rejection],
             built: int, reused: int, elapsed: float, rank: int) -> BuildSummary:
    counts = manifest.get("counts", {})
    hours = counts.get("audio_hours") or (
        sum(sp.windows for sp in plan.splits.values()) * plan.window_samples
        / plan.sample_rate / SECONDS_PER_HOUR)
    size = counts.get("bytes", 0)
    return BuildSummary(
        out_dir=out_dir, storage=plan.storage,
        windows={n: sp.windows for n, sp in plan.splits.items()}, audio_hours=hours,
        bytes=size, bytes_per_audio_hour=size / hours if hours else 0.0, rejected=rejected,
        silent_draws_skipped=counts.get("silent_draws_skipped", 0), shards_built=built,
        shards_reused=reused, elapsed_s=elapsed, complete=bool(manifest.get("complete")),
        random_init=bool(manifest.get("random_init")), rank=rank)


def load_cache_config(conf: str | Path | None, section: str = "cache") -> CacheConfig:
    """The ``cache`` section of a profile (defaults when ``conf`` is None)."""
    from cleancodec.pipeline.config import load_section

    return load_section(conf, section, CacheConfig)


def run_cache(conf: str | Path | None, codec_choice: str | None = None,
              clean_dir: str | Path | None = None, noise_dir: str | Path | None = None,
              rir_dir: str | Path | None = None, out_dir: str | Path = "data/cache",
              storage: str | None = None, workers: int = 1, overwrite: bool = False,
              verify: bool = False, progress: bool = True) -> BuildSummary:
    """``cleancodec cache``: load the profile's ``codec`` and ``cache`` sections, apply the
    command-line overrides (``codec_choice``: ``"random"`` or a weights path), build."""
    from cleancodec.pipeline.codec import CodecConfig
    from cleancodec.pipeline.config import load_section

    cfg = load_cache_config(conf)
    codec_cfg = load_section(conf, "codec", CodecConfig)
    if codec_choice:
        codec_cfg = dataclasses.replace(codec_cfg, weights=codec_choice)
    if storage:
        cfg = dataclasses.replace(cfg, storage=storage)
    return build_cache(cfg, codec_cfg, clean_dir, noise_dir, rir_dir, out_dir,
                       overwrite=overwrite, workers=workers, verify=verify, progress=progress)


__all__ = [
    "BuildError", "BuildSummary", "CacheConfig", "CacheMismatchError", "Inputs",
    "NoUsableInputError", "Plan", "build_cache", "load_cache_config", "make_plan", "make_window",
    "resolve_inputs", "run_cache",
]
