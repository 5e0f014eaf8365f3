"""Denoise files and folders: plan, drive the enhancer over streamed files, report failures.

Each file is streamed (``infer.fileio``): blocks of ``read_block_seconds`` are read, resampled to
16 kHz with a ``soxr`` stream, cut into chunks (``infer.chunking.ChunkPlanner``), enhanced in
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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from cleancodec.core.atomic import write_json_atomic
from cleancodec.core.audio import EMPTY, AudioError
from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig
from cleancodec.core.config import load_section, to_dict
from cleancodec.core.dirlock import DirectoryLock
from cleancodec.core.oserrors import describe, is_os_failure, named_os_errors
from cleancodec.core.stopping import GracefulStop
from cleancodec.infer.chunking import Chunk, ChunkAssembler, ChunkPlanner, ChunkSpec
from cleancodec.infer.denoise import (
    DenoiseConfig,
    Enhancer,
    chunk_spec,
    enhance_chunks,
    load_enhancer,
)
from cleancodec.infer.fileio import (
    AudioReader,
    AudioWriter,
    Fifo,
    FileTask,
    Resampler,
    RunError,
    default_output,
    plan_tasks,
    total_seconds,
)

log = logging.getLogger(__name__)

REPORT_NAME = "cleancodec_denoise.json"
# output samples kept back until the input's length is known (resamplers may run a sample over)
HOLDBACK = 64
STATUSES = ("ok", "skipped", "failed")


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
    stopped_by: str = ""      # the signal that stopped the run before its last file

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
        if self.stopped_by:
            out.append(f"stopped by {self.stopped_by} after the file in flight; rerun with "
                       "--skip-existing to do the rest")
        return out


# --- one file ---------------------------------------------------------------------------------


class FileJob:
    """Streaming state of one file: reader → 16 kHz → chunks … outputs → writer."""

    def __init__(self, task: FileTask, enhancer: Enhancer, spec: ChunkSpec, cfg: DenoiseConfig):
        self.task, self.cfg = task, cfg
        self.reader = AudioReader(task.input)
        self.channels, self.sr_in = self.reader.channels, self.reader.sample_rate
        self.sr_out = int(cfg.output_sr or self.sr_in)
        self.to16 = Resampler(self.sr_in, enhancer.sample_rate, self.channels)
        self.back = Resampler(enhancer.sample_rate, self.sr_out, self.channels)
        self.mix = float(cfg.mix)
        self.dry = Resampler(self.sr_in, self.sr_out, self.channels) if self.mix > 0 else None
        self.dry_fifo, self.wet_fifo = Fifo(self.channels), Fifo(self.channels)
        self.planner = ChunkPlanner(spec, self.channels, enhancer.hop)
        self.assembler = ChunkAssembler(spec)
        self.block = max(1, round(cfg.read_block_seconds * self.sr_in))
        self.outstanding = 0  # chunks handed out and not yet returned
        self.input_done = False
        self.failed = False
        self.writer: AudioWriter | None = None
        comment = RANDOM_INIT_BANNER if enhancer.codec.is_random else ""
        try:
            self.writer = AudioWriter(task.output, self.sr_out, self.channels, self.reader.format,
                                      self.reader.subtype, comment)
        except BaseException:
            self.reader.close()
            raise

    @property
    def n_in(self) -> int:
        """Input samples read so far (at the input rate)."""
        return self.reader.frames_read

    # writing ----------------------------------------------------------------------------
    def _emit_wet(self, y16: np.ndarray, last: bool = False) -> None:
        """Resample enhanced 16 kHz samples to the output rate, blend, and write what's ready."""
        self.wet_fifo.put(self.back.push(y16, last=last))
        ready = self.wet_fifo.size if self.dry is None else min(self.wet_fifo.size,
                                                                self.dry_fifo.size)
        n = max(0, ready - HOLDBACK)
        if self.dry is None:
            self.writer.write(self.wet_fifo.take(n))
            return
        wet, dry = self.wet_fifo.take(n), self.dry_fifo.take(n)
        self.writer.write((1.0 - self.mix) * wet + self.mix * dry)

    # reading ----------------------------------------------------------------------------
    def chunks(self) -> Iterator[Chunk]:
        """Read the file block by block and yield its chunks (16 kHz, ``[C x L]``)."""
        for x in self.reader.blocks(self.block):
            if self.dry is not None:
                self.dry_fifo.put(self.dry.push(x))
            yield from self._plan(self.to16.push(x))
        if self.n_in == 0:
            raise AudioError(self.task.input, EMPTY)
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
        written = self.writer.written
        rest = rest[:, :max(0, target - written)]
        rest = np.pad(rest, ((0, 0), (0, max(0, target - written - rest.shape[1]))))
        self.writer.write(rest)
        self.reader.close()
        self.writer.commit()

    def abort(self) -> None:
        """Drop everything written for this file (failure or interruption)."""
        self.failed = True
        try:
            self.reader.close()
        except Exception:  # closing a broken handle must not hide the first error
            pass
        if self.writer is not None:
            self.writer.abort()


# --- the driver -------------------------------------------------------------------------------


class _Batcher:
    """Collect chunks (possibly of several files) and enhance them ``batch_size`` rows a time."""

    def __init__(self, enhancer: Enhancer, batch_size: int,
                 on_failure: Callable[[FileJob, str], None]):
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


def denoise_path(input_path: str | Path, output_path: str | Path, enhancer: Enhancer,
                 cfg: DenoiseConfig, progress: bool = True,
                 stop: GracefulStop | None = None) -> RunSummary:
    """Denoise a file or a folder tree into ``output_path`` (see module docstring).

    Returns a RunSummary; failures are in ``summary.failed``. Raises RunError when the run
    cannot start. A folder run also writes ``OUTPUT/cleancodec_denoise.json`` (the report).
    When ``stop`` is requested (a signal), the files in flight are finished and no new one is
    started; ``summary.stopped_by`` names the signal.
    """
    t0 = time.perf_counter()
    tasks = plan_tasks(input_path, output_path)
    try:
        spec = chunk_spec(cfg, enhancer)
    except ValueError as exc:
        raise RunError(str(exc)) from exc
    summary = RunSummary(random_codec=enhancer.codec.is_random)
    open_jobs: list[FileJob] = []
    files_bar = tqdm(total=len(tasks), unit="file", desc="files", disable=not progress)
    secs_bar = tqdm(total=round(total_seconds(tasks), 1), unit="s", desc="audio",
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
                fail(job, f"cannot write output ({describe(exc, job.task.output)})")
                continue
            record(job, "ok")

    batcher = _Batcher(enhancer, enhancer.auto_batch_size(cfg.batch_size), fail)
    try:
        for task in tasks:
            if stop is not None and stop.requested:
                summary.stopped_by = stop.name
                break
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
                if isinstance(exc, AudioError):
                    reason = exc.reason
                elif is_os_failure(exc):  # e.g. the disk filled up while writing
                    reason = f"cannot write output ({describe(exc, job.task.output)})"
                else:
                    reason = f"{type(exc).__name__}: {exc}"
                fail(job, reason)
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
        "counts": {s: summary.count(s) for s in STATUSES},
        "audio_seconds": round(summary.audio_seconds, 3),
        "wall_seconds": round(summary.wall_seconds, 3),
        "files": [asdict(r) for r in summary.results],
    })
    path = output_dir / REPORT_NAME
    write_json_atomic(path, report)
    return path


# --- the stage as the command line runs it ----------------------------------------------------


def run_denoise(input_path: str | Path, output_path: str | Path | None,
                conf: str | Path | None = None, overrides: Sequence[str] = (),
                progress: bool = True,
                load: Callable[[DenoiseConfig, CodecConfig], Enhancer] = load_enhancer,
                ) -> tuple[RunSummary, Path]:
    """Load the profile's ``codec`` / ``denoise`` sections, apply overrides, denoise.

    ``overrides``: ``codec.key=value`` / ``denoise.key=value`` items, applied after the profile.
    ``load`` makes the enhancer once the paths are checked (default: the torch one;
    ``functools.partial(infer.engines.load_engine, "onnx", MODEL)`` the onnxruntime one).
    Returns the summary and the output path.
    """
    codec_cfg = load_section(conf, "codec", CodecConfig, overrides)
    cfg = load_section(conf, "denoise", DenoiseConfig, overrides)
    output = Path(output_path) if output_path else default_output(input_path)
    plan_tasks(input_path, output)  # refuse a bad INPUT / OUTPUT before loading any model
    folder = output if Path(input_path).is_dir() else output.parent
    with named_os_errors(folder), DirectoryLock(folder, "denoise"), GracefulStop() as stop:
        enhancer = load(cfg, codec_cfg)
        summary = denoise_path(input_path, output, enhancer, cfg, progress=progress, stop=stop)
    return summary, output


__all__ = [
    "REPORT_NAME",
    "FileResult",
    "RunError",
    "RunSummary",
    "default_output",
    "denoise_path",
    "plan_tasks",
    "run_denoise",
    "write_report",
]
