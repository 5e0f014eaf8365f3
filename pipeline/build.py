"""Build the latent cache: corpus → windows → mix → encode → shards, plus the manifest.

:func:`build_cache` is the stage function behind ``cleancodec cache``; this module only
orchestrates. Each concern has its own module:

============================  =================================================================
``cache_config``              :class:`CacheConfig`, the ``cache`` section and its checks
``inputs``                    input folders, file discovery and checks, ``corpus.json``,
                              ``rejected.tsv``
``pairing``                   premixed corpora: clean / noisy pairs by path, name or DNS
                              fileid, their checks, K and speakers
``plan``                      the :class:`~cleancodec.pipeline.plan.Plan`: sources, window
                              counts and shard tasks per split
``windows``                   one window / one shard mixed, a shard encoded
``shards``                    storage (zarr v3, webdataset): writing a shard (the one reader
                              is ``cleancodec.trainer.data``)
``manifest``                  ``manifest.json``, resume checks, the shard :class:`Ledger`
``cachedir``                  the output folder: ours / scratch / foreign, resume or clear
``workers``                   running shard tasks inline or in a process pool, progress
``topology``                  ranks under torchrun, devices, the process group
``atomic``                    every file the build writes: temp name, fsync, rename
============================  =================================================================

How a build runs
----------------
1. *Prepare* (rank 0 only): resolve the input folders (generating the synthetic corpus when the
   profile asks for it), load the codec, find and check every clean / noise / RIR file — or pair
   and check premixed clean / noisy files (``pairing``) — (results cached in ``corpus.json``;
   bad files go to ``rejected.tsv``), split clean speech by speaker,
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

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cleancodec.core.config import to_dict
from cleancodec.core.dirlock import DirectoryLock
from cleancodec.core.hashing import fingerprint
from cleancodec.core.oserrors import named_os_errors
from cleancodec.core.stopping import GracefulStop
from cleancodec.core.topology import GLOO, Topology, barrier, broadcast_object, process_group
from cleancodec.pipeline import shards
from cleancodec.pipeline.build_errors import BuildError, CacheMismatchError, NoUsableInputError
from cleancodec.pipeline.cache_config import CacheConfig
from cleancodec.pipeline.cachedir import check_out_dir, clear_scratch, verify_done
from cleancodec.pipeline.corpus import listing
from cleancodec.pipeline.inputs import (
    REJECTED_FILE,
    Inputs,
    Rejection,
    discover,
    read_corpus_record,
    rejections,
    resolve_inputs,
    scan_corpus,
    scan_premixed,
    write_corpus_record,
    write_rejected,
)
from cleancodec.pipeline.manifest import (
    Ledger,
    compare_build,
    load_manifest,
    new_manifest,
    now,
    save_manifest,
)
from cleancodec.pipeline.plan import Plan, make_plan
from cleancodec.pipeline.workers import (
    Progress,
    run_tasks_inline,
    run_tasks_pool,
    worker_codec_config,
)

MAX_LISTED_REJECTIONS = 20  # rejected files named in the summary text
MAX_LISTED_DIFFS = 12       # differences named when refusing to resume a cache
BYTES_PER_MB = 1e6
BYTES_PER_GB = 1e9


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
    pairing: dict[str, Any] | None = None  # premixed: the manifest's ``premixed`` record

    def text(self) -> str:
        """Human-readable multi-line summary."""
        lines = [
            f"cache {self.out_dir} ({self.storage}): "
            + ", ".join(f"{split} {n} windows" for split, n in self.windows.items()),
            f"  audio {self.audio_hours:.3f} h · {self.bytes / BYTES_PER_MB:.1f} MB on disk · "
            f"{self.bytes_per_audio_hour / BYTES_PER_GB:.3f} GB per audio-hour",
            f"  shards built {self.shards_built}"
            + (f" by rank {self.rank} of {self.world}" if self.world > 1 else "")
            + f", reused {self.shards_reused} · "
            f"{self.elapsed_s:.1f} s · silent draws skipped {self.silent_draws_skipped}",
        ]
        if self.pairing:
            p = self.pairing
            lines.append(f"  premixed pairs {p['pairs']} (paired by {p['rule']}, "
                         f"K = {p['noisy_per_clean']} noisy per clean) · unpaired clean "
                         f"{p['unpaired']['clean']}, noisy {p['unpaired']['noisy']}")
        lines.append(f"  rejected inputs: {len(self.rejected)}"
                     + (f" (see {self.out_dir / REJECTED_FILE})" if self.rejected else ""))
        lines += [f"    {r.role}: {r.path}: {r.reason}"
                  for r in self.rejected[:MAX_LISTED_REJECTIONS]]
        if len(self.rejected) > MAX_LISTED_REJECTIONS:
            lines.append(f"    … and {len(self.rejected) - MAX_LISTED_REJECTIONS} more")
        if not self.complete:
            lines.append("  INCOMPLETE: rerun the same command to finish the missing shards")
        if self.random_init:
            from cleancodec.core.codec import RANDOM_INIT_BANNER

            lines.append(f"  {RANDOM_INIT_BANNER}")
        return "\n".join(lines)


@dataclass
class _Prepared:
    plan: Plan
    manifest: dict[str, Any]
    rejected: list[Rejection]


def _share_error(topology: Topology, error: str | None) -> None:
    """Rank 0 tells every rank whether preparing failed; the others raise in that case."""
    error = broadcast_object(error, topology)
    if error is not None and not topology.is_main:
        raise BuildError(f"rank 0 failed to prepare the cache: {error}")


def _prepare(cfg: CacheConfig, codec: Any, inputs: Inputs, out_dir: Path, overwrite: bool,
             workers: int, verify: bool, progress: bool) -> _Prepared:
    """Rank 0's step 1: check the folder, scan the corpus, plan, create storage and manifest."""
    existing = check_out_dir(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_scratch(out_dir)
    constants = codec.constants()
    codec_settings = {"bf16": bool(codec.cfg.bf16)}
    files = discover(inputs, cfg)
    previous = None
    if existing is not None:
        wanted = {"codec": constants, "codec_settings": codec_settings, "config": to_dict(cfg),
                  "inputs": inputs.as_dict(), "corpus_fingerprint": fingerprint(listing(files))}
        diffs = compare_build(existing, wanted)
        if diffs:
            raise CacheMismatchError(
                f"{out_dir}: holds a cache built with another codec, config or corpus:\n  - "
                + "\n  - ".join(diffs[:MAX_LISTED_DIFFS])
                + "\nUse another --out folder, or --overwrite to delete and rebuild this one.")
        try:
            previous = read_corpus_record(out_dir)
        except (OSError, ValueError):
            previous = None
    if inputs.premixed:
        record = scan_premixed(files, cfg, constants["sample_rate"], constants["hop_length"],
                               workers, previous, progress)
    else:
        record = scan_corpus(files, cfg, constants["sample_rate"], workers, previous, progress)
    rejected = rejections(record, inputs)
    write_corpus_record(out_dir, record)
    write_rejected(out_dir, rejected)  # before planning, so "no usable input" still lists why
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
                                     cfg.compression_level,
                                     noisy_per_clean=plan.noisy_per_clean)
    Ledger(out_dir, manifest, Topology()).sync()
    if existing is not None and verify_done(out_dir, manifest, verify):
        save_manifest(out_dir, manifest)
    return _Prepared(plan, manifest, rejected)


def _finalise(out_dir: Path, plan: Plan, ledger: Ledger) -> dict[str, Any]:
    """Rank 0's step 3: counts, ``complete`` and the zarr group attributes."""
    ledger.sync()
    manifest = ledger.manifest
    records = [s for sp in manifest["splits"].values() for s in sp["shards"]]
    complete = all(s.get("status") == "done" for s in records)
    hours = plan.audio_hours()
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
        manifest["completed"] = now()
    save_manifest(out_dir, manifest)
    if plan.storage == "zarr" and complete:
        for name, sp in plan.splits.items():
            if sp.windows:
                shards.set_zarr_attributes(out_dir, name, {"manifest": manifest})
    return manifest


def build_cache(cfg: CacheConfig, codec_cfg: Any, clean_dir: str | Path | None = None,
                noise_dir: str | Path | None = None, rir_dir: str | Path | None = None,
                out_dir: str | Path = "data/cache", overwrite: bool = False, workers: int = 1,
                verify: bool = False, progress: bool = True,
                noisy_dir: str | Path | None = None) -> BuildSummary:
    """Build (or resume) the latent cache in ``out_dir``.

    Parameters
    ----------
    cfg : the ``cache`` section (window counts, storage, dtype, mixing, seed…).
    codec_cfg : ``pipeline.codec.CodecConfig`` of the frozen DAC encoder.
    clean_dir, noise_dir, rir_dir : input folders; default ``cfg.clean`` / ``cfg.noise`` /
        ``cfg.rir`` or, with ``cfg.corpus == "synthetic"``, the generated corpus.
    noisy_dir : premixed noisy files paired with ``clean_dir``'s (default ``cfg.noisy``),
        instead of ``noise_dir`` (giving both raises CorpusError); see
        :mod:`cleancodec.pipeline.pairing`.
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
    from cleancodec.core.codec import load_codec

    if workers < 1:
        raise ValueError("workers must be >= 1")
    started = time.perf_counter()
    out_dir = Path(out_dir).absolute()
    # a gloo group whatever the codec's device: ranks only exchange barriers and small objects
    with process_group(codec_cfg.device, backend=GLOO,
                       timeout_minutes=cfg.rank_timeout_minutes) as topology, \
            GracefulStop() as stop, named_os_errors(out_dir), \
            (DirectoryLock(out_dir, "cache") if topology.is_main else contextlib.nullcontext()):
        error, prepared, inputs = None, None, None
        if topology.is_main:
            try:
                inputs = resolve_inputs(cfg, clean_dir, noise_dir, rir_dir,
                                        noisy_dir=noisy_dir)
                codec = load_codec(worker_codec_config(codec_cfg, topology, workers))
                prepared = _prepare(cfg, codec, inputs, out_dir, overwrite, workers, verify,
                                    progress)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                _share_error(topology, error)
                raise
        _share_error(topology, error)
        if not topology.is_main:
            inputs = resolve_inputs(cfg, clean_dir, noise_dir, rir_dir, generate=False,
                                    noisy_dir=noisy_dir)
            codec = load_codec(worker_codec_config(codec_cfg, topology, workers))
            manifest = load_manifest(out_dir)
            record = read_corpus_record(out_dir)
            plan = make_plan(cfg, record, inputs, manifest["codec"])
            prepared = _Prepared(plan, manifest, rejections(record, inputs))
        return _build_shards(prepared, codec, codec_cfg, topology, out_dir, workers, progress,
                             started, stop)


def _build_shards(prepared: _Prepared, codec: Any, codec_cfg: Any, topology: Topology,
                  out_dir: Path, workers: int, progress: bool, started: float,
                  stop: GracefulStop) -> BuildSummary:
    """Step 2 on every rank (its share of the pending shards), then step 3 on rank 0.

    A stop signal finishes the shards in flight, records them, and raises StopRequested: the
    cache is left resumable (rerun the same command)."""
    plan, manifest = prepared.plan, prepared.manifest
    ledger = Ledger(out_dir, manifest, topology)
    all_tasks = plan.shard_tasks()
    pending = set(ledger.pending(plan))
    mine = [t for pos, t in enumerate(all_tasks)
            if pos % topology.world_size == topology.rank and t in pending]
    done_windows = sum(t.windows for t in all_tasks if t not in pending)
    if topology.world_size == 1:
        bar = Progress(sum(t.windows for t in all_tasks), done_windows, plan.window_seconds,
                       progress)
    else:  # one bar, on rank 0, for its own share
        bar = Progress(sum(t.windows for t in mine), 0, plan.window_seconds,
                       progress and topology.is_main)
    built = 0
    shard_start = time.perf_counter()

    def on_done(split: str, record: dict[str, Any]) -> None:
        nonlocal built
        record["rank"] = topology.rank
        ledger.mark_done(split, record)
        bar.update(record["windows"])
        built += 1

    try:
        if workers > 1 and len(mine) > 1:
            run_tasks_pool(plan, worker_codec_config(codec_cfg, topology, workers), out_dir,
                           mine, min(workers, len(mine)), on_done, lambda: stop.requested)
        else:
            run_tasks_inline(plan, codec, out_dir, mine, on_done, lambda: stop.requested)
    finally:
        bar.close()
    if stop.requested:
        raise stop.stop(f"{built} shard(s) built and recorded in {out_dir}; rerun the same "
                        "command to build the rest")
    shard_seconds = time.perf_counter() - shard_start
    barrier(topology)
    if topology.is_main:
        manifest = _finalise(out_dir, plan, ledger)
    summary = _summary(out_dir, plan, manifest, prepared.rejected, built,
                       len(all_tasks) - len(pending), time.perf_counter() - started,
                       topology.rank)
    return dataclasses.replace(summary, shard_seconds=shard_seconds, world=topology.world_size)


def _summary(out_dir: Path, plan: Plan, manifest: dict[str, Any], rejected: list[Rejection],
             built: int, reused: int, elapsed: float, rank: int) -> BuildSummary:
    counts = manifest.get("counts", {})
    hours = counts.get("audio_hours") or plan.audio_hours()
    size = counts.get("bytes", 0)
    return BuildSummary(
        out_dir=out_dir, storage=plan.storage,
        windows={n: sp.windows for n, sp in plan.splits.items()}, audio_hours=hours,
        bytes=size, bytes_per_audio_hour=size / hours if hours else 0.0, rejected=rejected,
        silent_draws_skipped=counts.get("silent_draws_skipped", 0), shards_built=built,
        shards_reused=reused, elapsed_s=elapsed, complete=bool(manifest.get("complete")),
        random_init=bool(manifest.get("random_init")), rank=rank,
        pairing=manifest.get("premixed"))


def load_cache_config(conf: str | Path | None, section: str = "cache",
                      overrides: Sequence[str] = ()) -> CacheConfig:
    """The ``cache`` section of a profile (defaults when ``conf`` is None), with
    ``section.key=value`` ``overrides`` applied."""
    from cleancodec.core.config import load_section

    return load_section(conf, section, CacheConfig, overrides)


def run_cache(conf: str | Path | None, codec_choice: str | None = None,
              clean_dir: str | Path | None = None, noise_dir: str | Path | None = None,
              rir_dir: str | Path | None = None, out_dir: str | Path = "data/cache",
              storage: str | None = None, workers: int = 1, overwrite: bool = False,
              verify: bool = False, progress: bool = True,
              overrides: Sequence[str] = (), noisy_dir: str | Path | None = None) -> BuildSummary:
    """``cleancodec cache``: load the profile's ``codec`` and ``cache`` sections with the
    ``section.key=value`` ``overrides``, apply the command-line options (``codec_choice``:
    ``"random"`` or a weights path; ``storage``; ``noisy_dir``: premixed pairs), build."""
    from cleancodec.core.codec import CodecConfig
    from cleancodec.core.config import load_section

    cfg = load_cache_config(conf, overrides=overrides)
    codec_cfg = load_section(conf, "codec", CodecConfig, overrides)
    if codec_choice:
        codec_cfg = dataclasses.replace(codec_cfg, weights=codec_choice)
    if storage:
        cfg = dataclasses.replace(cfg, storage=storage)
    return build_cache(cfg, codec_cfg, clean_dir, noise_dir, rir_dir, out_dir,
                       overwrite=overwrite, workers=workers, verify=verify, progress=progress,
                       noisy_dir=noisy_dir)


__all__ = [
    "BuildError", "BuildSummary", "CacheConfig", "CacheMismatchError", "NoUsableInputError",
    "build_cache", "load_cache_config", "run_cache",
]
