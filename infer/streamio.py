"""``cleancodec denoise --stream IN OUT``: denoise a live stream, stdin/stdout or files.

IN and OUT are paths or ``-`` (stdin / stdout). Input is a WAV stream (its header may leave
the length unknown, as a writer into a pipe does), any file libsndfile reads, or raw PCM with
``--format`` and ``--rate``. Samples are resampled to 16 kHz (soxr streams) when needed, pushed
through a stream block by block (:func:`open_stream`: the stateful ``infer.stateful`` engine
for torch models, the windowed ``infer.stream.StreamDenoiser`` otherwise), resampled back to
the input's rate (or ``--output-sr``) and written as soon as they are final: WAV by default,
the raw format of the input with ``--format``. Nothing but audio goes to stdout; the latency line,
the random-codec warning and the summary go to stderr.

The output is aligned with the input (output sample i is input sample i enhanced) and has the
input's length: it starts ``block + lookahead`` after the input (plus compute time). An output
file is written to a temporary name and renamed when the stream ends. Ctrl-C / SIGTERM end the
input there: the tail is still enhanced and written, then the exit status is 128 + signal.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cleancodec.core.atomic import publish, temp_beside
from cleancodec.core.stopping import GracefulStop
from cleancodec.infer.fileio import AudioReader, Fifo, Resampler
from cleancodec.infer.pcm import (
    RAW_FORMATS,
    PcmError,
    PcmFormat,
    PcmReader,
    PcmWriter,
    encoding_for_subtype,
    output_encoding,
    read_wav_header,
)
from cleancodec.infer.stream import (
    DEFAULT_BLOCK_MS,
    Engine,
    StreamDenoiser,
    StreamError,
    block_frames_for,
)

log = logging.getLogger(__name__)

STDIO = "-"
HOLDBACK = 64  # output samples kept back until the input's length is known (resampler overrun)
FILE_READ_FRAMES = 4096  # frames per read from a file input
CLOSED_STDOUT = "closed stdout"  # StreamSummary.stopped_by when the reader of stdout went away
# how a stream is computed: "auto" (stateful where the engine allows it, else windowed),
# "stateful" (infer.stateful: layer state, each block costs its own compute), "windowed"
# (infer.stream: the whole chain over context + block + lookahead for each block)
STREAM_AUTO, STREAM_STATEFUL, STREAM_WINDOWED = "auto", "stateful", "windowed"
STREAM_KINDS = (STREAM_AUTO, STREAM_STATEFUL, STREAM_WINDOWED)


@dataclass
class StreamOptions:
    """Settings of a streamed run.

    block_ms: output block (a multiple of 20 ms); raw_format: a key of ``RAW_FORMATS`` for raw
    PCM in and out (None: WAV / any file); rate / channels: of raw input; output_sr: output
    rate (None: the input's); mix: share of the dry input blended back in; kind: one of
    ``STREAM_KINDS`` (:func:`open_stream`).
    """

    block_ms: float = DEFAULT_BLOCK_MS
    raw_format: str | None = None
    rate: int | None = None
    channels: int = 1
    output_sr: int | None = None
    mix: float = 0.0
    kind: str = STREAM_AUTO

    def validate(self) -> None:
        """Raise StreamError for settings that cannot work."""
        if self.kind not in STREAM_KINDS:
            raise StreamError(f"unknown stream kind {self.kind!r} ({' | '.join(STREAM_KINDS)})")
        if self.raw_format is not None and self.raw_format not in RAW_FORMATS:
            raise StreamError(f"unknown raw format {self.raw_format!r}; known: "
                              f"{', '.join(RAW_FORMATS)}")
        if self.raw_format is not None and self.rate is None:
            raise StreamError("raw PCM carries no sample rate: give --rate (e.g. --rate 16000; "
                              "other rates are resampled to 16 kHz and back)")
        if self.raw_format is None and self.rate is not None:
            raise StreamError("--rate is for raw PCM (--format); a WAV stream states its own "
                              "rate")
        if self.rate is not None and self.rate <= 0:
            raise StreamError(f"--rate must be positive, got {self.rate}")
        if self.channels < 1:
            raise StreamError(f"--channels must be ≥ 1, got {self.channels}")
        if not 0.0 <= self.mix <= 1.0:
            raise StreamError(f"mix must be within 0..1, got {self.mix}")


@dataclass
class StreamSummary:
    """Outcome of a streamed run (printed to stderr)."""

    latency_ms: float
    input_seconds: float = 0.0
    wall_seconds: float = 0.0
    stopped_by: str = ""

    def lines(self) -> list[str]:
        rtf = self.wall_seconds / self.input_seconds if self.input_seconds else float("nan")
        out = [f"streamed {self.input_seconds:.1f} s of audio in {self.wall_seconds:.1f} s "
               f"(real-time factor {rtf:.3f}, latency {self.latency_ms:.0f} ms + compute)"]
        if self.stopped_by == CLOSED_STDOUT:
            out.append("stopped: the reader of stdout closed it")
        elif self.stopped_by:
            out.append(f"input ended by {self.stopped_by}; the tail was flushed")
        return out


# --- ends of the pipe -------------------------------------------------------------------------


class _FileInput:
    """A file any container libsndfile reads, as float32 ``[C x n]`` blocks."""

    def __init__(self, path: Path):
        self.reader = AudioReader(path)
        self.sample_rate, self.channels = self.reader.sample_rate, self.reader.channels
        self.encoding = encoding_for_subtype(self.reader.subtype)

    def blocks(self) -> Iterator[np.ndarray]:
        return self.reader.blocks(FILE_READ_FRAMES)

    def close(self) -> None:
        self.reader.close()


class _PcmInput:
    """A WAV or raw PCM byte stream (stdin or a file) as float32 ``[C x n]`` blocks."""

    def __init__(self, stream: BinaryIO, name: str, opts: StreamOptions,
                 should_stop: Callable[[], bool] | None = None):
        if opts.raw_format is None:
            fmt, size = read_wav_header(stream, name)
        else:
            fmt, size = PcmFormat(RAW_FORMATS[opts.raw_format], int(opts.rate),
                                  int(opts.channels)), None
        self.reader = PcmReader(stream, fmt, size, should_stop)
        self.sample_rate, self.channels = fmt.sample_rate, fmt.channels
        self.encoding = output_encoding(fmt.encoding)

    def blocks(self) -> Iterator[np.ndarray]:
        return self.reader.blocks()

    def close(self) -> None:
        self.reader.close()


def open_input(source: str, opts: StreamOptions, stack: ExitStack,
               should_stop: Callable[[], bool] | None = None) -> _FileInput | _PcmInput:
    """The input named ``source`` (``-``: stdin, read unbuffered so that a stop request is
    seen while the pipe is idle); closed by ``stack``."""
    if source == STDIO:
        if sys.stdin.isatty():
            raise StreamError("stdin is a terminal: pipe audio in (e.g. `sox -d -t wav - | "
                              "cleancodec denoise --stream - -`) or give a file")
        stdin = getattr(sys.stdin.buffer, "raw", sys.stdin.buffer)
        return _PcmInput(stdin, "stdin", opts, should_stop)
    path = Path(source)
    if not path.is_file():
        raise StreamError(f"{source}: no such file")
    if opts.raw_format is None:
        src = _FileInput(path)
        stack.callback(src.close)
        return src
    handle = stack.enter_context(open(path, "rb"))
    return _PcmInput(handle, str(path), opts, should_stop)


class _Output:
    """stdout, or a file written under a temporary name and renamed on :meth:`commit`."""

    def __init__(self, target: str, fmt: PcmFormat, wav: bool):
        self.tmp: Path | None = None
        if target == STDIO:
            self.handle: BinaryIO = sys.stdout.buffer
        else:
            self.path = Path(target)
            self.tmp = temp_beside(self.path)
            self.handle = open(self.tmp, "wb")
        try:
            self.writer = PcmWriter(self.handle, fmt, wav)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        self.writer.close()
        if self.tmp is not None:
            self.handle.close()
            publish(self.tmp, self.path)
            self.tmp = None

    def abort(self) -> None:
        """Drop a partly written file (never raises)."""
        if self.tmp is not None:
            try:
                self.handle.close()
            except OSError:
                pass
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


# --- the run ----------------------------------------------------------------------------------


def open_stream(engine: Engine, block_frames: int, channels: int = 1,
                kind: str = STREAM_AUTO) -> StreamDenoiser:
    """The stream that runs ``engine`` in blocks of ``block_frames`` frames.

    ``"stateful"``: :class:`~cleancodec.infer.stateful.StatefulStream` (torch engines whose
    denoiser keeps its statistics local in time; StreamError otherwise). ``"windowed"``:
    :class:`~cleancodec.infer.stream.StreamDenoiser` (any engine, the exported ONNX graph
    included). ``"auto"``: stateful when the engine allows it, windowed otherwise (logged).
    Both have the same latency and output.
    """
    if kind not in STREAM_KINDS:
        raise StreamError(f"unknown stream kind {kind!r} ({' | '.join(STREAM_KINDS)})")
    if kind != STREAM_WINDOWED:
        from cleancodec.infer.stateful import StatefulStream

        try:
            return StatefulStream.for_engine(engine, block_frames=block_frames,
                                             channels=channels)
        except StreamError as exc:
            if kind == STREAM_STATEFUL:
                raise
            log.warning("windowed stream (each block reruns the chain over its window): %s",
                        exc)
    return StreamDenoiser.for_engine(engine, block_frames=block_frames, channels=channels)



class _Pipeline:
    """input rate → 16 kHz → stream → (mix) → output rate, with the output length fixed to
    the input's."""

    def __init__(self, stream: StreamDenoiser, sr_in: int, sr_out: int, channels: int,
                 mix: float, out: PcmWriter):
        rate = stream.sample_rate
        self.stream, self.out, self.mix = stream, out, mix
        self.sr_in, self.sr_out = sr_in, sr_out
        self.to16 = Resampler(sr_in, rate, channels)
        self.back = Resampler(rate, sr_out, channels)
        self.resampling = sr_in != rate or sr_out != rate
        self.dry = Fifo(channels)
        self.pending = Fifo(channels)
        self.n_in = 0

    def _wet(self, y16: np.ndarray, last: bool = False) -> None:
        if self.mix > 0:
            y16 = (1.0 - self.mix) * y16 + self.mix * self.dry.take(y16.shape[1])
        self.pending.put(self.back.push(y16, last=last))
        keep = HOLDBACK if self.resampling else 0
        self.out.write(self.pending.take(max(0, self.pending.size - keep)))

    def push(self, x: np.ndarray) -> None:
        self.n_in += x.shape[1]
        x16 = self.to16.push(x)
        if self.mix > 0:
            self.dry.put(x16)
        self._wet(self.stream.push(x16))

    def finish(self) -> None:
        x16 = self.to16.flush()
        if self.mix > 0:
            self.dry.put(x16)
        y16 = np.concatenate([self.stream.push(x16), self.stream.flush(mono=False)], axis=1)
        self._wet(y16, last=True)
        target = round(self.n_in * self.sr_out / self.sr_in) - self.out.frames_written
        rest = self.pending.take(self.pending.size)[:, :max(0, target)]
        self.out.write(np.pad(rest, ((0, 0), (0, max(0, target - rest.shape[1])))))


def stream_file(engine: Engine, source: str, target: str, opts: StreamOptions,
                notify: Callable[[str], None] | None = None,
                stop: GracefulStop | None = None) -> StreamSummary:
    """Denoise ``source`` into ``target`` (paths or ``-``) through ``engine`` as a stream.

    ``notify`` gets the latency line before the first sample is read (default: stderr).
    Raises StreamError / PcmError / AudioError for bad input or settings.
    """
    opts.validate()
    notify = notify or (lambda text: print(text, file=sys.stderr, flush=True))
    start = time.perf_counter()
    with ExitStack() as stack:
        src = open_input(source, opts, stack,
                         (lambda: stop.requested) if stop is not None else None)
        block_frames = block_frames_for(opts.block_ms, engine.sample_rate, engine.hop)
        stream = open_stream(engine, block_frames, src.channels, opts.kind)
        sr_out = int(opts.output_sr or src.sample_rate)
        resampled = "" if src.sample_rate == engine.sample_rate == sr_out else \
            f"; {src.sample_rate} Hz in, {sr_out} Hz out (resampler delay on top)"
        notify(f"cleancodec stream: {stream.describe()}{resampled}")
        fmt = PcmFormat(src.encoding, sr_out, src.channels)
        summary = StreamSummary(stream.latency_ms)
        out: _Output | None = None
        pipe: _Pipeline | None = None
        try:
            out = _Output(target, fmt, wav=opts.raw_format is None)
            pipe = _Pipeline(stream, src.sample_rate, sr_out, src.channels, opts.mix,
                             out.writer)
            for x in src.blocks():
                pipe.push(x)
                if stop is not None and stop.requested:
                    break
            if stop is not None and stop.requested:
                summary.stopped_by = stop.name
            pipe.finish()
            out.commit()
        except BrokenPipeError:  # the reader of stdout went away: nothing more to do
            quiet_broken_pipe()
            summary.stopped_by = CLOSED_STDOUT
        except BaseException:
            if out is not None:
                out.abort()
            raise
        summary.input_seconds = (pipe.n_in if pipe is not None else 0) / src.sample_rate
    summary.wall_seconds = time.perf_counter() - start
    return summary


def quiet_broken_pipe() -> None:
    """After the reader of stdout went away: point stdout at /dev/null so that the
    interpreter's final flush does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run_stream(source: str, target: str, conf: str | Path | None = None,
               overrides: Sequence[str] = (), opts: StreamOptions | None = None,
               engine: str = "torch", onnx: str | None = None,
               notify: Callable[[str], None] | None = None) -> StreamSummary:
    """``cleancodec denoise --stream``: load the engine, stream ``source`` into ``target``.

    ``overrides``: ``codec.key=value`` / ``denoise.key=value`` items, applied after the
    profile (``denoise.mix`` / ``denoise.output_sr`` stand in for unset ``opts`` fields).
    """
    from cleancodec.core.codec import CodecConfig
    from cleancodec.core.config import load_section
    from cleancodec.infer.denoise import DenoiseConfig
    from cleancodec.infer.engines import load_engine

    opts = opts or StreamOptions()
    codec_cfg = load_section(conf, "codec", CodecConfig, overrides)
    cfg = load_section(conf, "denoise", DenoiseConfig, overrides)
    opts.mix = opts.mix or float(cfg.mix)
    opts.output_sr = opts.output_sr or cfg.output_sr
    opts.validate()
    if target != STDIO and source != STDIO and Path(target).resolve() == Path(source).resolve():
        raise StreamError(f"{target}: output would overwrite the input")
    loaded = load_engine(engine, onnx, cfg, codec_cfg)
    with GracefulStop() as stop:
        return stream_file(loaded, source, target, opts, notify, stop)


__all__ = ["STDIO", "STREAM_AUTO", "STREAM_KINDS", "STREAM_STATEFUL", "STREAM_WINDOWED",
           "PcmError", "StreamOptions", "StreamSummary", "open_stream", "run_stream",
           "stream_file"]
