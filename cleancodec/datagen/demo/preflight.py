"""``make demo``'s first step: make sure the DAC weights can be had before minutes of work start.

:func:`preflight` looks in dac's cache, else downloads through dac; offline it raises
CodecWeightsError and :func:`run_preflight` turns that into the one offline-weights message
(``pipeline.codec.offline_message``, naming ``make demo CODEC=random``) and exit status
:data:`EXIT_NO_WEIGHTS`. With the random-init codec the first line says that audio quality is
meaningless.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cleancodec.core.codec import (
    RANDOM,
    RANDOM_INIT_BANNER,
    CodecConfig,
    CodecWeightsError,
    download_failure,
    fetch_default_weights,
    offline_message,
)
from cleancodec.core.config import load_section

EXIT_OK = 0
EXIT_NO_WEIGHTS = 2
DEMO_MAKE_TARGET = "demo"


def preflight(codec_cfg: CodecConfig) -> str:
    """Return the first line the demo prints; raise CodecWeightsError when weights are missing."""
    if codec_cfg.weights == RANDOM:
        return RANDOM_INIT_BANNER
    if codec_cfg.weights:
        path = Path(codec_cfg.weights).expanduser()
        if not path.is_file():
            raise CodecWeightsError(f"{path}: no such weights file (CODEC= / codec.weights)")
        return f"demo with DAC weights {path}"
    return f"demo with DAC weights {fetch_default_weights()}"


def missing_weights_message(exc: CodecWeightsError) -> str:
    """What to do, for the CodecWeightsError :func:`preflight` raised (download error or path)."""
    cause = exc.__cause__
    reason = download_failure(cause) if cause is not None else str(exc).splitlines()[0]
    return offline_message(reason, make_target=DEMO_MAKE_TARGET)


def run_preflight(conf: str | Path | None = None, codec: str | None = None) -> tuple[int, str]:
    """The ``demo preflight`` step: ``(exit status, text)``.

    ``conf``: profile with a ``codec`` section; ``codec``: ``random`` or a weights path (overrides
    ``codec.weights``). Status :data:`EXIT_OK` with the demo's first line (print it to stdout),
    or :data:`EXIT_NO_WEIGHTS` with what to do (print it to stderr).
    """
    codec_cfg = load_section(conf, "codec", CodecConfig)
    if codec:
        codec_cfg = replace(codec_cfg, weights=codec)
    try:
        return EXIT_OK, preflight(codec_cfg)
    except CodecWeightsError as exc:
        return EXIT_NO_WEIGHTS, missing_weights_message(exc)


__all__ = ["EXIT_NO_WEIGHTS", "EXIT_OK", "missing_weights_message", "preflight", "run_preflight"]
