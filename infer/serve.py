"""``cleancodec serve``: a local browser app to denoise speech and compare it by ear.

The page (Gradio) takes an uploaded or recorded file, denoises it with the same stage function
as ``cleancodec denoise`` (``infer.run.denoise_path``: same chunking, resampling, mix and output
format, so the file it offers for download equals the command line's), and shows noisy,
denoised and codec-alone (``--bypass``) versions side by side: audio players, spectrograms on
one colour scale (``infer.evaluate.plot_spectrograms``) and DNSMOS (``infer.metrics.dnsmos``).
A checkpoint picker lists the newest ``best.pt`` of each run under ``denoise.runs_dir``. A live
tab denoises the microphone through a stream with layer state (``infer.stateful``; windowed,
``infer.stream``, for global-statistics denoisers) where one block is computed faster than it
lasts (measured when the app starts).

Everything the page does, bar the widgets, is in :class:`DenoiseService` (no Gradio import), so
tests call it directly; :mod:`cleancodec.infer.serve_app` lays out the page and launches it.

HTTP API: the denoise button is the endpoint ``/denoise`` (``gradio_client``:
``Client(url).predict(handle_file("noisy.wav"), checkpoint, mix, codec_alone,
api_name="/denoise")``); ``/checkpoints`` lists the picker's choices.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cleancodec.core.audio import AudioError, audio_info, read_audio
from cleancodec.core.codec import RANDOM_INIT_BANNER, Codec, CodecConfig, identities_match
from cleancodec.core.config import require
from cleancodec.infer.denoise import (
    CHECKPOINT_NAME,
    DenoiseConfig,
    Enhancer,
    find_default_checkpoint,
    load_enhancer,
    trained_codec_identity,
)
from cleancodec.infer.fileio import DENOISED_SUFFIX, Resampler
from cleancodec.infer.metrics import COLUMNS, DNSMOS_KEYS, SAMPLE_RATE, dnsmos
from cleancodec.infer.run import denoise_path
from cleancodec.infer.stream import DEFAULT_BLOCK_MS, StreamDenoiser, block_frames_for

log = logging.getLogger(__name__)

API_DENOISE = "denoise"  # api_name of the denoise endpoint (HTTP API: /denoise)
API_CHECKPOINTS = "checkpoints"
BYPASS_CHOICE = "codec alone (--bypass)"
CODEC_SUFFIX = "_codec"  # the codec-alone output beside the denoised one
SPECTROGRAM_NAME = "spectrograms.png"
PCM16_SCALE = 32768.0  # browser microphone chunks arrive as int16
LIVE_TIMING_RUNS = 3  # block forwards timed at start (the first, a warm-up, is not counted)


class ServeError(ValueError):
    """A request the page refuses (the message is shown in the page as it is)."""


@dataclass
class ServeConfig:
    """Settings of the app itself (the ``codec`` / ``denoise`` sections of the profile say how
    audio is denoised).

    host / port: where the server listens (127.0.0.1: this machine only).
    max_seconds: longest input accepted, in seconds of audio.
    live_block_ms: block of the live microphone stream (latency = block + lookahead).
    live_headroom: the live tab is offered when one block takes at most this share of its own
        duration to compute (the rest is left to the browser round trip).
    keep_minutes: request folders (outputs, spectrograms) older than this are deleted.
    """

    host: str = "127.0.0.1"
    port: int = 7860
    max_seconds: float = 600.0
    live_block_ms: float = DEFAULT_BLOCK_MS
    live_headroom: float = 0.8
    keep_minutes: float = 60.0

    def __post_init__(self) -> None:
        require(1 <= int(self.port) <= 65535, "serve.port", f"must be 1..65535, got {self.port}")
        require(self.max_seconds > 0, "serve.max_seconds",
                f"must be positive, got {self.max_seconds}")
        require(self.live_block_ms > 0, "serve.live_block_ms",
                f"must be positive, got {self.live_block_ms}")
        require(0 < self.live_headroom <= 1, "serve.live_headroom",
                f"must be within (0, 1], got {self.live_headroom}")
        require(self.keep_minutes > 0, "serve.keep_minutes",
                f"must be positive, got {self.keep_minutes}")


@dataclass
class Comparison:
    """What one denoise request produced (all files in the request's own folder).

    denoised / codec_alone: outputs of ``denoise_path`` (codec_alone None when not asked);
    scores: condition → DNSMOS columns (``infer.metrics.DNSMOS_KEYS``); spectrogram: PNG.
    """

    denoised: Path
    codec_alone: Path | None
    spectrogram: Path
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The DNSMOS scores as a Markdown table (one row per condition)."""
        cols = list(DNSMOS_KEYS)
        lines = ["| | " + " | ".join(COLUMNS[c] for c in cols) + " |",
                 "|---|" + "---:|" * len(cols)]
        for name, values in self.scores.items():
            lines.append(f"| {name} | " + " | ".join(
                f"{values.get(c, float('nan')):.2f}" for c in cols) + " |")
        return "\n".join(lines + [f"\n{note}" for note in self.notes])


@dataclass(frozen=True)
class LiveTiming:
    """How fast one live block is computed: ``seconds`` for a block of ``block_seconds``."""

    seconds: float
    block_seconds: float
    latency_ms: float
    headroom: float

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time / audio time (below 1 keeps up)."""
        return self.seconds / self.block_seconds

    @property
    def keeps_up(self) -> bool:
        return self.rtf <= self.headroom

    def describe(self) -> str:
        """One line for the page."""
        verdict = ("keeps up" if self.keeps_up else
                   f"too slow to keep up live (needs ≤ {self.headroom:g}): denoise files on "
                   "the first tab instead")
        return (f"One {self.block_seconds * 1000:.0f} ms block takes {self.seconds * 1000:.0f} "
                f"ms on this machine (real-time factor {self.rtf:.2f}): {verdict}. Latency "
                f"{self.latency_ms:.0f} ms plus compute.")


# --- checkpoints ------------------------------------------------------------------------------


def run_checkpoints(runs_dir: str | Path) -> list[Path]:
    """The newest ``best.pt`` of each run under ``runs_dir`` (a run: a folder directly inside
    it; its checkpoint may lie deeper, e.g. ``runs/demo/train/best.pt``), newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    newest: dict[str, Path] = {}
    for path in root.rglob(CHECKPOINT_NAME):
        run = path.relative_to(root).parts[0]
        if run not in newest or path.stat().st_mtime > newest[run].stat().st_mtime:
            newest[run] = path
    return sorted(newest.values(), key=lambda p: p.stat().st_mtime, reverse=True)


# --- the service ------------------------------------------------------------------------------


Progress = Callable[[float, str], None]


def _no_progress(_fraction: float, _desc: str) -> None:
    """A progress callback that shows nothing."""


class DenoiseService:
    """What the page calls: checkpoints, input checks, denoising, scores, the live stream.

    The codec is loaded once; an enhancer per checkpoint is loaded on first use and kept.
    Outputs go to a folder per request under ``work_dir``.
    """

    def __init__(self, cfg: DenoiseConfig, codec_cfg: CodecConfig, serve: ServeConfig,
                 work_dir: Path, codec: Codec | None = None):
        self.cfg, self.serve = cfg, serve
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        first = load_enhancer(dataclasses.replace(cfg, bypass=True), codec_cfg, codec)
        self.codec = first.codec
        self._enhancers: dict[str, Enhancer] = {BYPASS_CHOICE: first}
        self._lock = threading.Lock()
        self.default_checkpoint = BYPASS_CHOICE if cfg.bypass else str(
            cfg.checkpoint or find_default_checkpoint(cfg.runs_dir, self.codec.identity))
        self.enhancer(self.default_checkpoint)  # a bad checkpoint fails at start, not later

    @property
    def random_codec(self) -> bool:
        return self.codec.is_random

    # checkpoints ------------------------------------------------------------------------
    def checkpoint_choices(self) -> list[tuple[str, str]]:
        """The picker's ``(label, value)`` pairs: the default checkpoint first, then the
        newest ``best.pt`` of each run; a checkpoint of another codec says so; last the codec
        alone."""
        paths = [self.default_checkpoint] if self.default_checkpoint != BYPASS_CHOICE else []
        paths += [str(p) for p in run_checkpoints(self.cfg.runs_dir)
                  if str(p) != self.default_checkpoint]
        choices = []
        for path in paths:
            label = path
            trained = trained_codec_identity(Path(path)) if Path(path).is_file() else None
            if trained is not None and not identities_match(trained, self.codec.identity):
                label += " (trained on another codec)"
            choices.append((label, path))
        return choices + [(BYPASS_CHOICE, BYPASS_CHOICE)]

    def enhancer(self, checkpoint: str | None) -> Enhancer:
        """The enhancer of ``checkpoint`` (a path, or :data:`BYPASS_CHOICE`), loaded once."""
        key = checkpoint or self.default_checkpoint
        with self._lock:
            if key not in self._enhancers:
                cfg = dataclasses.replace(self.cfg, checkpoint=key, bypass=False)
                self._enhancers[key] = load_enhancer(cfg, self.codec.cfg, self.codec)
            return self._enhancers[key]

    # input -------------------------------------------------------------------------------
    def check_input(self, path: str | Path | None) -> float:
        """Refuse what cannot be denoised; returns the input's length in seconds.

        Raises ServeError: no file, not audio / unreadable, empty, longer than
        ``serve.max_seconds``.
        """
        if path is None or not str(path):
            raise ServeError("No audio: upload a file or record one first.")
        name = Path(path).name
        try:
            info = audio_info(path)
        except AudioError as exc:  # the reason without the upload's temporary folder
            reason = exc.reason.replace(str(path), name)
            raise ServeError(f"{name}: not a readable audio file ({reason}).") from exc
        if info.frames <= 0:
            raise ServeError(f"{name}: the file holds no audio (0 samples).")
        seconds = info.frames / info.sample_rate
        if seconds > self.serve.max_seconds:
            raise ServeError(f"{name}: {seconds:.0f} s is longer than this server accepts "
                             f"({self.serve.max_seconds:g} s; `cleancodec serve "
                             "--max-seconds` sets it, `cleancodec denoise` has no limit).")
        return seconds

    # denoising ---------------------------------------------------------------------------
    def _request_dir(self) -> Path:
        """A fresh folder for one request; folders older than ``keep_minutes`` go."""
        cutoff = time.time() - self.serve.keep_minutes * 60
        for old in self.work_dir.iterdir():
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        out = self.work_dir / uuid.uuid4().hex
        out.mkdir()
        return out

    def denoise_file(self, path: str | Path, out_dir: Path, checkpoint: str | None,
                     mix: float, suffix: str = DENOISED_SUFFIX) -> Path:
        """Denoise one file as ``cleancodec denoise INPUT OUTPUT --mix MIX`` does; returns the
        output (``<stem><suffix><ext>`` in ``out_dir``). Raises ServeError when it fails."""
        src = Path(path)
        output = out_dir / f"{src.stem}{suffix}{src.suffix}"
        cfg = dataclasses.replace(self.cfg, mix=float(mix), skip_existing=False)
        summary = denoise_path(src, output, self.enhancer(checkpoint), cfg, progress=False)
        if summary.failed:
            raise ServeError(f"{src.name}: {summary.failed[0].reason}")
        return output

    def compare(self, path: str | Path | None, checkpoint: str | None, mix: float,
                codec_alone: bool = True, progress: Progress = _no_progress) -> Comparison:
        """The page's denoise button: check, denoise, codec alone, DNSMOS, spectrograms."""
        progress(0.0, "checking the input")
        self.check_input(path)
        src = Path(path)  # type: ignore[arg-type]
        out_dir = self._request_dir()
        progress(0.05, "loading the checkpoint")
        self.enhancer(checkpoint)
        progress(0.1, "denoising")
        denoised = self.denoise_file(src, out_dir, checkpoint, mix)
        bypassed = None
        if codec_alone and checkpoint != BYPASS_CHOICE:
            progress(0.45, "codec alone (--bypass)")
            bypassed = self.denoise_file(src, out_dir, BYPASS_CHOICE, mix, CODEC_SUFFIX)
        progress(0.75, "DNSMOS")
        waves = {"noisy": src, "denoised": denoised}
        if bypassed is not None:
            waves["codec alone"] = bypassed
        mono = {name: read_audio(p, SAMPLE_RATE, allow_silent=True) for name, p in waves.items()}
        result = Comparison(denoised, bypassed, out_dir / SPECTROGRAM_NAME)
        for name, wave in mono.items():
            try:
                result.scores[name] = dnsmos(wave)
            except Exception as exc:  # speechmos raises its own types (e.g. too short)
                result.notes.append(f"DNSMOS of {name} failed: {type(exc).__name__}: {exc}")
        progress(0.9, "spectrograms")
        self._plot(mono, src.name, result)
        progress(1.0, "done")
        return result

    def _plot(self, mono: dict[str, np.ndarray], title: str, result: Comparison) -> None:
        """Write the spectrograms of ``mono`` (16 kHz ``[T]`` each) on one colour scale."""
        from cleancodec.infer.evaluate import EvaluateConfig, plot_spectrograms

        banner = RANDOM_INIT_BANNER if self.random_codec else None
        png = plot_spectrograms(mono, title, EvaluateConfig(), banner)
        result.spectrogram.write_bytes(png)

    # live --------------------------------------------------------------------------------
    def live_stream(self, checkpoint: str | None) -> StreamDenoiser:
        """A fresh aligned mono stream over ``checkpoint``'s enhancer: with layer state where
        the denoiser allows it, windowed otherwise (``infer.streamio.open_stream``)."""
        from cleancodec.infer.streamio import open_stream

        enhancer = self.enhancer(checkpoint)
        frames = block_frames_for(self.serve.live_block_ms, enhancer.sample_rate,
                                  enhancer.hop)
        return open_stream(enhancer, frames)

    def time_live_block(self, checkpoint: str | None = None) -> LiveTiming:
        """Compute time of one steady-state live block: the best of a few pushes of one block
        each into a stream that has its lookahead (the first push, a warm-up, not counted)."""
        stream = self.live_stream(checkpoint)
        g = stream.geometry
        stream.push(np.zeros(g.block + g.lookahead, np.float32))
        times = []
        for _ in range(LIVE_TIMING_RUNS):
            t0 = time.perf_counter()
            stream.push(np.zeros(g.block, np.float32))
            times.append(time.perf_counter() - t0)
        return LiveTiming(min(times[1:]), g.block / g.sample_rate, g.latency_ms,
                          self.serve.live_headroom)


class LiveSession:
    """One browser's live stream: microphone chunks at any rate → denoised 16 kHz chunks.

    ``push(rate, samples)`` takes int16 or float ``[n]`` / ``[n x C]`` (channels are averaged)
    and returns the float32 ``[m]`` samples at 16 kHz that became final; ``finish`` returns
    the rest and the whole denoised take.
    """

    def __init__(self, stream: StreamDenoiser, checkpoint: str | None):
        self.stream, self.checkpoint = stream, checkpoint
        self.rate: int | None = None
        self.to16: Resampler | None = None
        self.taken: list[np.ndarray] = []

    def push(self, rate: int, samples: np.ndarray) -> np.ndarray:
        """Denoise the next microphone chunk; returns the 16 kHz samples now final."""
        x = np.asarray(samples)
        x = x.astype(np.float32) / PCM16_SCALE if x.dtype.kind in "iu" else x.astype(np.float32)
        mono = x.mean(axis=1) if x.ndim == 2 else x
        if self.to16 is None:
            self.rate = int(rate)
            self.to16 = Resampler(self.rate, self.stream.sample_rate, 1)
        elif int(rate) != self.rate:
            raise ServeError(f"the microphone changed rate mid-stream ({self.rate} → {rate} Hz)")
        y = self.stream.push(self.to16.push(mono[None])[0])
        self.taken.append(y)
        return y

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """End the stream: ``(last samples, whole denoised take)``, float32 16 kHz ``[n]``."""
        if self.to16 is not None:
            self.taken.append(self.stream.push(self.to16.flush()[0]))
        last = self.stream.flush()
        self.taken.append(last)
        return last, np.concatenate(self.taken)
