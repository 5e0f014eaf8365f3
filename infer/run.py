"""Denoise files and folders: mirror the tree, resample, keep channels, batch, report failures.

Each file is streamed: blocks of ``read_block_seconds`` are read with ``soundfile``, resampled to
16 kHz with a ``soxr`` stream, cut into chunks (``infer.denoise.ChunkPlanner``), enhanced in
batches that may mix chunks of several files, joined (``ChunkAssembler``), resampled back to the
output rate, optionally blended with the dry input (``mix``) and written progressively into a
temporary file that is renamed over the output only when complete. Memory therefore depends on
the chunk and batch sizes, not on file length. Every output has exactly its input's length (at
the output rate), channel count, container format and sample format.

A file that cannot be used (corrupt, empty, non-audio, NaN) is reported with the reason; the
others go on, and :class:`RunSummary` lists the failures.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from cleancodec.pipeline.atomic import publish, temp_beside, write_json_atomic
from cleancodec.pipeline.audio import AudioError
from cleancodec.pipeline.codec import RANDOM_INIT_BANNER, CodecConfig
from cleancodec.pipeline.config import load_section, to_dict

from .denoise import (
    Chunk,
    ChunkAssembler,
    ChunkPlanner,
    ChunkSpec,
    DenoiseConfig,
    Enhancer,
    enhance_chunks,
    load_enhancer,
)

log = logging.getLogger(__name__)

REPORT_NAME = "cleancodec_denoise.json"
RESAMPLE_QUALITY = "HQ"
# soundfile container names that are not audio files one would find in a folder
_NOT_AUDIO_FORMATS = {"raw", "mat4", "mat5"}
_EXTRA_EXTENSIONS = {"wave", "oga", "opus", "aif", "aifc", "snd", "sph", "sf"}
PCM_CLIP = 1.0  # integer sample formats cannot hold |x| > 1
# output samples kept back until the input's length is known (resamplers may run a sample over)
HOLDBACK = 64


def audio_extensions() -> set[str]:
    """File extensions (lower case, no dot) of every container libsndfile reads here."""
    names = {name.lower() for name in sf.available_formats()} - _NOT_AUDIO_FORMATS
    return names | _EXTRA_EXTENSIONS


class RunError(ValueError):
    """The run cannot start (bad INPUT / OUTPUT)."""


@dataclass
class FileResult:
    """Outcome for one input file. ``status`` is ``ok``, ``skipped`` or ``failed``."""

    input: str
    output: str
    status: str
    reason: str = ""
    seconds: float = 0.0


@dataclass
class RunSummary:
    """Outcome of a whole run."""

    results: list[FileResult] = field(default_factory=list)
    wall_seconds: float = 0.0
    audio_seconds: float = 0.0
    random_codec: bool = False

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def lines(self) -> list[str]:
        """Human-readable summary, first line the random-codec warning where it applies."""
        out = [RANDOM_INIT_BANNER] if self.random_codec else []
        rtf = self.wall_seconds / self.audio_seconds if self.audio_seconds else float("nan")
        out.append(f"denoised {self.count('ok')} file(s), skipped {self.count('skipped')}, "
                   f"failed {self.count('failed')}; {self.audio_seconds:.1f} s of audio in "
                   f"{self.wall_seconds:.1f} s (real-time factor {rtf:.3f})")
        out += [f"  FAILED {r.input}: {r.reason}" for r in self.failed]
        return out


# --- planning: which files go where -----------------------------------------------------------


@dataclass
class FileTask:
    input: Path
    output: Path


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def plan_tasks(input_path: str | Path, output_path: str | Path) -> list[FileTask]:
    """Map every audio file under ``input_path`` to its output path (mirrored tree).

    A file INPUT maps to OUTPUT itself, or to ``OUTPUT/<name>`` when OUTPUT is a folder.
    Raises RunError when INPUT is missing, holds no audio, or OUTPUT equals / lies inside it.
    """
    src = Path(input_path).expanduser().resolve()
    dst = Path(output_path).expanduser().resolve()
    if not src.exists():
        raise RunError(f"{input_path}: no such file or folder")
    if src.is_file():
        target = dst / src.name if dst.is_dir() else dst
        if target == src:
            raise RunError(f"{output_path}: output would overwrite the input file")
        return [FileTask(src, target)]
    if dst == src or _is_within(dst, src):
        raise RunError(f"{output_path}: output folder must not be the input folder or lie "
                       f"inside it ({input_path})")
    exts = audio_extensions()
    files = sorted(p for p in src.rglob("*")
                   if p.is_file() and p.suffix.lower().lstrip(".") in exts)
    if not files:
        raise RunError(f"{input_path}: no audio files found (extensions: "
                       f"{', '.join(sorted(exts))})")
    tasks = [FileTask(p, dst / p.relative_to(src)) for p in files]
    inputs = set(files)
    for task in tasks:
        if task.output in inputs:
            raise RunError(f"{task.output}: output would overwrite an input file")
    return tasks


# --- streaming pieces -------------------------------------------------------------------------


class _Resampler:
    """Streaming ``[C x n]`` resampler (soxr), or a pass-through when the rates are equal."""

    def __init__(self, sr_in: int, sr_out: int, channels: int):
        self.stream = None if sr_in == sr_out else soxr.ResampleStream(
            sr_in, sr_out, channels, dtype="float32", quality=RESAMPLE_QUALITY)
        self.channels = channels

    def push(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self.stream is None:
            return x
        y = self.stream.resample_chunk(np.ascontiguousarray(x.T), last=last)
        return np.ascontiguousarray(y.reshape(-1, self.channels).T)

    def flush(self) -> np.ndarray:
        return self.push(np.zeros((self.channels, 0), np.float32), last=True)


class _Fifo:
    """A FIFO of ``[C x n]`` samples."""

    def __init__(self, channels: int):
        self.channels = channels
        self.parts: deque[np.ndarray] = deque()
        self.size = 0

    def put(self, x: np.ndarray) -> None:
        if x.shape[1]:
            self.parts.append(x)
            self.size += x.shape[1]

    def take(self, n: int) -> np.ndarray:
        out, need = [], n
        while need and self.parts:
            head = self.parts.popleft()
            out.append(head[:, :need])
            if head.shape[1] > need:
                self.parts.appendleft(head[:, need:])
            need -= out[-1].shape[1]
        self.size -= n - need
        return np.concatenate(out, axis=1) if out else np.zeros((self.channels, 0), np.float32)


def _open_input(path: Path) -> sf.SoundFile:
    try:
        return sf.SoundFile(str(path))
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError…)
        raise AudioError(path, f"cannot decode as audio ({type(exc).__name__}: {exc})") from exc


class FileJob:
    """Streaming state of one file: reader → 16 kHz → chunks … outputs → writer."""

    def __init__(self, task: FileTask, enhancer: Enhancer, spec: ChunkSpec, cfg: DenoiseConfig):
        self.task, self.cfg = task, cfg
        self.reader = _open_input(task.input)
        info = self.reader
        if info.channels < 1:
            raise AudioError(task.input, "no audio channels")
        self.channels, self.sr_in = info.channels, info.samplerate
        self.sr_out = int(cfg.output_sr or self.sr_in)
        self.format, self.subtype = info.format, info.subtype
        self.sr16 = enhancer.sample_rate
        self.to16 = _Resampler(self.sr_in, self.sr16, self.channels)
        self.back = _Resampler(self.sr16, self.sr_out, self.channels)
        self.mix = float(cfg.mix)
        self.dry = _Resampler(self.sr_in, self.sr_out, self.channels) if self.mix > 0 else None
        self.dry_fifo, self.wet_fifo = _Fifo(self.channels), _Fifo(self.channels)
        self.planner = ChunkPlanner(spec, self.channels, enhancer.hop)
        self.assembler = ChunkAssembler(spec)
        self.block = max(1, round(cfg.read_block_seconds * self.sr_in))
        self.n_in = 0
        self.written = 0
        self.outstanding = 0  # chunks handed out and not yet returned
        self.input_done = False
        self.failed = False
        self.writer: sf.SoundFile | None = None
        self.tmp: Path | None = None
        self.comment = RANDOM_INIT_BANNER if enhancer.codec.is_random else ""
        try:
            self._open_writer()
        except BaseException:
            self.reader.close()
            raise

    # writing ----------------------------------------------------------------------------
    def _open_writer(self) -> None:
        out = self.task.output
        if not sf.check_format(self.format, self.subtype):
            raise AudioError(out, f"cannot write {self.format}/{self.subtype}")
        self.tmp = temp_beside(out)
        try:
            self.writer = sf.SoundFile(str(self.tmp), "w", samplerate=self.sr_out,
                                       channels=self.channels, format=self.format,
                                       subtype=self.subtype)
        except Exception as exc:
            self.tmp.unlink(missing_ok=True)
            raise AudioError(out, f"cannot write {self.format}/{self.subtype} at "
                                  f"{self.sr_out} Hz ({type(exc).__name__}: {exc})") from exc
        if self.comment:
            try:
                self.writer.comment = self.comment
            except Exception:  # not every container has a comment tag
                log.debug("%s: container has no comment tag", out)

    def _write(self, y: np.ndarray) -> None:
        if not y.shape[1]:
            return
        if "FLOAT" not in self.subtype and "DOUBLE" not in self.subtype:
            y = np.clip(y, -PCM_CLIP, PCM_CLIP)
        self.writer.write(np.ascontiguousarray(y.T))
        self.written += y.shape[1]

    def _emit_wet(self, y16: np.ndarray, last: bool = False) -> None:
        """Resample enhanced 16 kHz samples to the output rate, blend, and write what's ready."""
        self.wet_fifo.put(self.back.push(y16, last=last))
        ready = self.wet_fifo.size if self.dry is None else min(self.wet_fifo.size,
                                                                self.dry_fifo.size)
        n = max(0, ready - HOLDBACK)
        if self.dry is None:
            self._write(self.wet_fifo.take(n))
            return
        wet, dry = self.wet_fifo.take(n), self.dry_fifo.take(n)
        self._write((1.0 - self.mix) * wet + self.mix * dry)

    # reading ----------------------------------------------------------------------------
    def chunks(self) -> Iterator[Chunk]:
        """Read the file block by block and yield its chunks (16 kHz, ``[C x L]``)."""
        while True:
            try:
                block = self.reader.read(self.block, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(self.task.input,
                                 f"cannot decode as audio ({type(exc).__name__}: {exc})") from exc
            if not len(block):
                break
            if not np.all(np.isfinite(block)):
                raise AudioError(self.task.input, "contains NaN or inf samples")
            x = np.ascontiguousarray(block.T)
            self.n_in += x.shape[1]
            if self.dry is not None:
                self.dry_fifo.put(self.dry.push(x))
            yield from self._plan(self.to16.push(x))
        if self.n_in == 0:
            raise AudioError(self.task.input, "empty (0 samples)")
        if self.dry is not None:
            self.dry_fifo.put(self.dry.flush())
        yield from self._plan(self.to16.flush())
        final = self.planner.finish()
        self.outstanding += len(final)
        self.input_done = True
        yield from final

    def _plan(self, x16: np.ndarray) -> Iterator[Chunk]:
        ready = self.planner.push(x16)
        self.outstanding += len(ready)
        yield from ready

    def accept(self, chunk: Chunk, y: np.ndarray) -> None:
        """Take the enhanced output ``[C x L]`` of one of this file's chunks (in order)."""
        self.outstanding -= 1
        self._emit_wet(self.assembler.add(chunk.start, y))

    @property
    def done(self) -> bool:
        return self.input_done and self.outstanding == 0 and not self.failed

    @property
    def seconds(self) -> float:
        return self.n_in / self.sr_in

    def finish(self) -> None:
        """All chunks are back: flush, fix the length to the input's, and publish the file."""
        self._emit_wet(self.assembler.finish(self.planner.total or 0), last=True)
        target = round(self.n_in * self.sr_out / self.sr_in)
        rest = self.wet_fifo.take(self.wet_fifo.size)
        if self.dry is not None:
            dry = self.dry_fifo.take(self.dry_fifo.size)
            n = max(rest.shape[1], dry.shape[1])
            rest = np.pad(rest, ((0, 0), (0, n - rest.shape[1])))
            dry = np.pad(dry, ((0, 0), (0, n - dry.shape[1])))
            rest = (1.0 - self.mix) * rest + self.mix * dry
        rest = rest[:, :max(0, target - self.written)]
        rest = np.pad(rest, ((0, 0), (0, max(0, target - self.written - rest.shape[1]))))
        self._write(rest)
        self.reader.close()
        self.writer.close()
        publish(self.tmp, self.task.output)
        self.tmp = None

    def abort(self) -> None:
        """Drop everything written for this file (failure or interruption)."""
        self.failed = True
        for handle in (self.reader, self.writer):
            try:
                if handle is not None:
                    handle.close()
            except Exception:  # closing a broken handle must not hide the first error
                pass
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


# --- the driver -------------------------------------------------------------------------------


class _Batcher:
    """Collect chunks (possibly of several files) and enhance them ``batch_size`` rows a time."""

    def __init__(self, enhancer: Enhancer, batch_size: int, on_failure):
        self.enhancer, self.batch_size = enhancer, batch_size
        self.items: list[tuple[FileJob, Chunk]] = []
        self.on_failure = on_failure

    def rows(self) -> int:
        return sum(c.samples.shape[0] for _, c in self.items)

    def add(self, job: FileJob, chunk: Chunk) -> None:
        if self.items and self.items[-1][1].samples.shape[1] != chunk.samples.shape[1]:
            self.flush()
        self.items.append((job, chunk))
        if self.rows() >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        items = [(j, c) for j, c in self.items if not j.failed]
        self.items = []
        if not items:
            return
        try:
            outputs = enhance_chunks(self.enhancer, [c for _, c in items], self.batch_size)
        except RuntimeError as exc:  # e.g. out of memory: fail these files, keep going
            for job in {id(j): j for j, _ in items}.values():
                self.on_failure(job, f"enhancement failed ({type(exc).__name__}: {exc})")
            return
        for (job, chunk), y in zip(items, outputs):
            if not job.failed:
                job.accept(chunk, y)


def _total_seconds(tasks: list[FileTask]) -> float:
    total = 0.0
    for task in tasks:
        try:
            info = sf.info(str(task.input))
            total += info.frames / info.samplerate
        except Exception:  # unreadable files are reported when processed
            continue
    return total


def denoise_path(input_path: str | Path, output_path: str | Path, enhancer: Enhancer,
                 cfg: DenoiseConfig, progress: bool = True) -> RunSummary:
    """Denoise a file or a folder tree into ``output_path`` (see module docstring).

    Returns a RunSummary; failures are in ``summary.failed``. Raises RunError when the run
    cannot start. A folder run also writes ``OUTPUT/cleancodec_denoise.json`` (the report).
    """
    cfg.validate()
    t0 = time.perf_counter()
    tasks = plan_tasks(input_path, output_path)
    spec = ChunkSpec.from_config(cfg, enhancer.hop)
    summary = RunSummary(random_codec=enhancer.codec.is_random)
    open_jobs: list[FileJob] = []
    files_bar = tqdm(total=len(tasks), unit="file", desc="files", disable=not progress)
    secs_bar = tqdm(total=round(_total_seconds(tasks), 1), unit="s", desc="audio",
                    disable=not progress, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s "
                                                     "[{elapsed}<{remaining}]")

    def record(job: FileJob, status: str, reason: str = "") -> None:
        summary.results.append(FileResult(str(job.task.input), str(job.task.output), status,
                                          reason, round(job.seconds, 3)))
        summary.audio_seconds += job.seconds if status == "ok" else 0.0
        files_bar.update(1)
        if job in open_jobs:
            open_jobs.remove(job)

    def fail(job: FileJob, reason: str) -> None:
        if job.failed:  # already reported (e.g. its batch failed, then its reader was closed)
            return
        job.abort()
        log.error("%s: %s", job.task.input, reason)
        record(job, "failed", reason)

    def settle() -> None:
        for job in [j for j in open_jobs if j.done]:
            try:
                job.finish()
            except (OSError, sf.LibsndfileError) as exc:
                fail(job, f"cannot write output ({type(exc).__name__}: {exc})")
                continue
            record(job, "ok")

    batcher = _Batcher(enhancer, enhancer.auto_batch_size(cfg.batch_size), fail)
    try:
        for task in tasks:
            if cfg.skip_existing and task.output.exists():
                summary.results.append(FileResult(str(task.input), str(task.output), "skipped",
                                                  "output exists"))
                files_bar.update(1)
                continue
            try:
                job = FileJob(task, enhancer, spec, cfg)
            except AudioError as exc:
                summary.results.append(FileResult(str(task.input), str(task.output), "failed",
                                                  exc.reason))
                log.error("%s", exc)
                files_bar.update(1)
                continue
            open_jobs.append(job)
            try:
                for chunk in job.chunks():
                    batcher.add(job, chunk)
                    settle()
                    if job.failed:
                        break
                secs_bar.update(round(job.seconds, 1))
            except Exception as exc:  # any per-file problem: report it and go on
                fail(job, exc.reason if isinstance(exc, AudioError)
                     else f"{type(exc).__name__}: {exc}")
            settle()
        batcher.flush()
        settle()
    finally:
        for job in open_jobs:  # interrupted: leave no partial outputs behind
            job.abort()
        files_bar.close()
        secs_bar.close()
    summary.wall_seconds = time.perf_counter() - t0
    if Path(input_path).is_dir():
        write_report(Path(output_path), summary, enhancer, cfg)
    return summary


def write_report(output_dir: Path, summary: RunSummary, enhancer: Enhancer,
                 cfg: DenoiseConfig) -> Path:
    """``OUTPUT/cleancodec_denoise.json``: what made these files (evaluate reads it)."""
    report: dict[str, Any] = {}
    if summary.random_codec:
        report["warning"] = RANDOM_INIT_BANNER
    report.update({
        "enhancer": enhancer.describe(),
        "config": to_dict(cfg),
        "counts": {s: summary.count(s) for s in ("ok", "skipped", "failed")},
        "audio_seconds": round(summary.audio_seconds, 3),
        "wall_seconds": round(summary.wall_seconds, 3),
        "files": [asdict(r) for r in summary.results],
    })
    path = output_dir / REPORT_NAME
    write_json_atomic(path, report)
    return path




# --- the stage as the command line runs it ----------------------------------------------------


def default_output(input_path: str | Path) -> Path:
    """``<INPUT>_denoised`` beside the input (``name_denoised.ext`` for a file)."""
    src = Path(input_path).expanduser()
    src = Path(os.path.normpath(src.absolute()))
    if src.is_file():
        return src.with_name(f"{src.stem}_denoised{src.suffix}")
    return src.with_name(f"{src.name}_denoised")


def run_denoise(input_path: str | Path, output_path: str | Path | None,
                conf: str | Path | None = None, codec_weights: str | None = None,
                overrides: dict[str, Any] | None = None, device: str | None = None,
                threads: int | None = None,
                progress: bool = True) -> tuple[RunSummary, Path]:
    """Load the profile's ``codec`` / ``denoise`` sections, apply overrides, denoise.

    ``overrides`` holds ``DenoiseConfig`` fields (``None`` values are ignored); ``codec_weights``,
    ``device`` and ``threads`` override ``codec.weights`` / ``codec.device`` /
    ``codec.num_threads``. Returns the summary and the output path.
    """
    codec_cfg = load_section(conf, "codec", CodecConfig)
    codec_over = {"weights": codec_weights, "device": device, "num_threads": threads}
    codec_cfg = replace(codec_cfg, **{k: v for k, v in codec_over.items() if v})
    cfg = load_section(conf, "denoise", DenoiseConfig)
    cfg = replace(cfg, **{k: v for k, v in (overrides or {}).items() if v is not None})
    cfg.validate()
    output = Path(output_path) if output_path else default_output(input_path)
    plan_tasks(input_path, output)  # refuse a bad INPUT / OUTPUT before loading any model
    enhancer = load_enhancer(cfg, codec_cfg)
    return denoise_path(input_path, output, enhancer, cfg, progress=progress), output


__all__ = [
    "REPORT_NAME",
    "FileResult",
    "RunError",
    "RunSummary",
    "audio_extensions",
    "default_output",
    "denoise_path",
    "plan_tasks",
    "run_denoise",
    "write_report",
]
