"""Raw G.722 files (as shipped in Asterisk's ``*-g722`` sound packages) ↔ float32 PCM.

The files are headerless G.722 at 64 kbit/s: one byte per two 16 kHz samples. Decoding uses
the PyPI ``g722`` package (module ``G722``), a bit-exact ITU-T G.722 implementation. The codec
has a fixed group delay of :data:`G722_DELAY_SAMPLES` samples (QMF analysis + synthesis).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cleancodec.core.audio import AudioError, read_audio_channels, resample

G722_SAMPLE_RATE = 16000
G722_BIT_RATE = 64000
G722_DELAY_SAMPLES = 22  # encode → decode delay of the QMF pair, in 16 kHz samples
PCM16_SCALE = 32768.0
G722_SUFFIX = ".g722"


class G722Unavailable(RuntimeError):
    """The ``g722`` package is not installed."""


def _codec():
    try:
        import G722  # the PyPI distribution `g722` installs the module `G722`
    except ImportError as exc:
        raise G722Unavailable(
            "G.722 decoding needs the PyPI package 'g722': run `.venv/bin/pip install g722` "
            "(or `make install`)") from exc
    return G722.G722(G722_SAMPLE_RATE, G722_BIT_RATE)


def decode_g722_bytes(data: bytes) -> np.ndarray:
    """Decode raw 64 kbit/s G.722 bytes → float32 ``[2 * len(data)]`` in [-1, 1) at 16 kHz."""
    pcm = np.asarray(_codec().decode(data), dtype=np.int16)
    return (pcm.astype(np.float32) / PCM16_SCALE).astype(np.float32)


def encode_g722_bytes(audio: np.ndarray) -> bytes:
    """Encode float32 ``[T]`` at 16 kHz (values in [-1, 1]) → raw 64 kbit/s G.722 bytes."""
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * PCM16_SCALE),
                  -PCM16_SCALE, PCM16_SCALE - 1).astype(np.int16)
    return bytes(_codec().encode(pcm))


def read_g722(path: str | Path) -> np.ndarray:
    """Read a raw ``.g722`` file → float32 ``[T]`` at 16 kHz.

    Raises AudioError (naming the file) for an unreadable or zero-length file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AudioError(path, f"cannot read ({exc.strerror or exc})") from exc
    if not data:
        raise AudioError(path, "empty (0 bytes)")
    audio = decode_g722_bytes(data)
    if not np.all(np.isfinite(audio)):
        raise AudioError(path, "G.722 decoder produced non-finite samples")
    return audio


def read_prompt(path: str | Path, sample_rate: int) -> tuple[np.ndarray, int]:
    """Read one prompt (``.g722`` or any soundfile format) → (mono float32 ``[T]``, source rate).

    The audio is resampled to ``sample_rate``; the second value is the file's own rate, which
    tells a narrowband (8 kHz) recording from a wideband one. Silent files are returned as is
    (the caller trims and decides); unreadable ones raise AudioError.
    """
    path = Path(path)
    if path.suffix.lower() == G722_SUFFIX:
        audio, sr = read_g722(path), G722_SAMPLE_RATE
    else:
        channels, sr = read_audio_channels(path, allow_silent=True)
        audio = channels.mean(axis=0)
    return resample(audio, sr, sample_rate), sr
