"""The page of ``cleancodec serve`` (Gradio) and the stage the command line runs: the widgets,
the live microphone tab, and :func:`run_serve`. What the page does is in
:class:`cleancodec.infer.serve.DenoiseService` (no Gradio import there)."""
from __future__ import annotations

import html
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cleancodec.core.audio import AudioError
from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig
from cleancodec.core.config import load_section
from cleancodec.infer.denoise import (
    DenoiseConfig,
)
from cleancodec.infer.metrics import SAMPLE_RATE
from cleancodec.infer.serve import (
    API_CHECKPOINTS,
    API_DENOISE,
    BYPASS_CHOICE,
    Comparison,
    DenoiseService,
    LiveSession,
    LiveTiming,
    ServeConfig,
    ServeError,
    run_checkpoints,
)

# --- the page ---------------------------------------------------------------------------------

INTRO = """# cleancodec: denoise and compare by ear
Upload or record speech, press **Denoise**, then listen to the noisy input, the denoised
output and the codec alone (encode → decode without the denoiser: the quality ceiling), and
compare their spectrograms (one colour scale) and DNSMOS scores (reference-free, higher is
better). The download is the file `cleancodec denoise` writes with the same settings."""


def _ffmpeg_available() -> bool:
    """Whether streamed audio can be played back (Gradio encodes it with ffmpeg)."""
    return shutil.which("ffmpeg") is not None


def build_app(service: DenoiseService, timing: LiveTiming | None = None) -> Any:
    """The Gradio page over ``service`` (queued: one denoise at a time).

    ``timing``: the live block measurement (:meth:`DenoiseService.time_live_block`); the live
    tab says when the machine is too slow and then records nothing.
    """
    import gradio as gr

    def denoise(audio: str | None, checkpoint: str | None, mix: float, codec_alone: bool,
                progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008 (Gradio's way)
        try:
            result = service.compare(audio, checkpoint, mix, codec_alone,
                                     lambda f, desc: progress(f, desc=desc))
        except (ServeError, AudioError, ValueError, RuntimeError, OSError) as exc:
            raise gr.Error(html.escape(str(exc), quote=False), duration=None,
                           print_exception=False) from exc
        return (str(result.denoised),
                str(result.codec_alone) if result.codec_alone else None,
                str(result.spectrogram), result.table(), str(result.denoised))

    def checkpoints() -> gr.Dropdown:
        return gr.Dropdown(choices=service.checkpoint_choices())

    keep = round(service.serve.keep_minutes * 60)
    with gr.Blocks(title="cleancodec", analytics_enabled=False, delete_cache=(keep, keep)) as app:
        if service.random_codec:
            gr.Markdown(f"⚠️ **{RANDOM_INIT_BANNER}**", elem_id="random-banner")
        gr.Markdown(INTRO)
        with gr.Tab("Denoise a file"):
            with gr.Row():
                with gr.Column():
                    noisy = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                     label="noisy input (upload or record)", elem_id="noisy")
                    picker = gr.Dropdown(choices=service.checkpoint_choices(),
                                         value=service.default_checkpoint, label="checkpoint",
                                         elem_id="checkpoint")
                    mix = gr.Slider(0.0, 1.0, value=float(service.cfg.mix), step=0.05,
                                    label="dry/wet mix: share of the noisy input blended back "
                                          "(0 = denoised only)", elem_id="mix")
                    codec_alone = gr.Checkbox(value=True, label="also codec alone (--bypass)")
                    run = gr.Button("Denoise", variant="primary", elem_id="denoise")
                with gr.Column():
                    denoised = gr.Audio(label="denoised", type="filepath", interactive=False,
                                        elem_id="denoised")
                    bypassed = gr.Audio(label="codec alone", type="filepath", interactive=False,
                                        elem_id="codec-alone")
                    download = gr.DownloadButton("Download the denoised file",
                                                 elem_id="download")
                    scores = gr.Markdown(label="DNSMOS", elem_id="scores")
            spectrogram = gr.Image(label="spectrograms (one colour scale)", type="filepath",
                                   interactive=False, elem_id="spectrogram")
            run.click(denoise, [noisy, picker, mix, codec_alone],
                      [denoised, bypassed, spectrogram, scores, download],
                      api_name=API_DENOISE, concurrency_limit=1)
        with gr.Tab("Live microphone"):
            _live_tab(gr, service, timing, picker)
        app.load(checkpoints, None, picker, api_name=API_CHECKPOINTS)
    return app.queue()


def _live_tab(gr: Any, service: DenoiseService, timing: LiveTiming | None, picker: Any) -> None:
    """The live tab: microphone → a stream (``DenoiseService.live_stream``) over the picked
    checkpoint → a streamed player (with ffmpeg) and the whole denoised take when recording
    stops."""
    if timing is None:
        gr.Markdown("Live denoising was not measured on this machine.")
        return
    gr.Markdown(timing.describe(), elem_id="live-timing")
    if not timing.keeps_up:
        return
    streamed = _ffmpeg_available()
    if not streamed:
        gr.Markdown("Streamed playback needs ffmpeg (`apt-get install ffmpeg`); the denoised "
                    "take plays when the recording stops.")
    mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy",
                   label="microphone", elem_id="live-mic")
    out = gr.Audio(label="denoised (live)", streaming=True, autoplay=True, interactive=False,
                   visible=streamed)
    take = gr.Audio(label="denoised take", type="numpy", interactive=False)
    state = gr.State(None)

    def on_chunk(chunk: tuple[int, np.ndarray] | None, session: LiveSession | None,
                 checkpoint: str | None) -> tuple:
        if chunk is None:
            return None, session
        if session is None or session.checkpoint != checkpoint:
            session = LiveSession(service.live_stream(checkpoint), checkpoint)
        y = session.push(*chunk)
        return ((SAMPLE_RATE, y) if streamed and y.size else None), session

    def on_stop(session: LiveSession | None) -> tuple:
        if session is None:
            return None, None
        _, whole = session.finish()
        return (SAMPLE_RATE, whole), None

    mic.stream(on_chunk, [mic, state, picker], [out, state],
               stream_every=service.serve.live_block_ms / 1000, concurrency_limit=None)
    mic.stop_recording(on_stop, [state], [take, state])


# --- the stage as the command line runs it ----------------------------------------------------


def load_service(conf: str | Path | None, overrides: Sequence[str], serve: ServeConfig,
                 work_dir: str | Path | None = None) -> DenoiseService:
    """The service of profile ``conf`` + ``overrides`` (``codec.*`` / ``denoise.*``)."""
    codec_cfg = load_section(conf, "codec", CodecConfig, overrides)
    cfg = load_section(conf, "denoise", DenoiseConfig, overrides)
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="cleancodec-serve-"))
    return DenoiseService(cfg, codec_cfg, serve, work)


def require_gradio() -> None:
    """Raise ServeError with the install command when Gradio (the ``serve`` extra) is missing."""
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise ServeError(f"the app needs Gradio ({exc}): pip install -e '.[serve]' (make install "
                         "does)") from exc


def run_serve(conf: str | Path | None, overrides: Sequence[str], serve: ServeConfig,
              announce: Callable[[str], None] = print) -> None:
    """Load the models, measure live speed, and serve the page until interrupted.

    Raises ServeError when Gradio is not installed (before any model is loaded)."""
    require_gradio()
    service = load_service(conf, overrides, serve)
    if service.random_codec:
        announce(f"*** {RANDOM_INIT_BANNER} ***")
    timing = service.time_live_block()
    announce(timing.describe())
    app = build_app(service, timing)
    announce(f"cleancodec serve: http://{serve.host}:{serve.port}/ (Ctrl-C stops it)")
    try:
        app.launch(server_name=serve.host, server_port=int(serve.port), ssr_mode=False,
                   allowed_paths=[str(service.work_dir)], quiet=True)
    finally:
        shutil.rmtree(service.work_dir, ignore_errors=True)


__all__ = ["API_CHECKPOINTS", "API_DENOISE", "BYPASS_CHOICE", "Comparison", "DenoiseService",
           "LiveSession", "LiveTiming", "ServeConfig", "ServeError", "build_app",
           "load_service", "require_gradio", "run_checkpoints", "run_serve"]
