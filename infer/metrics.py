"""Speech-enhancement metrics, each a thin call of the reference package.

All signals are float32 mono ``[T]`` at 16 kHz.

- DNSMOS P.835 (SIG / BAK / OVRL) and P.808: ``speechmos.dnsmos.run`` (Microsoft's ONNX models,
  non-personalised unless asked); reference-free.
- PESQ wide-band: ``pesq.pesq(16000, ref, deg, "wb")``.
- STOI: ``pystoi.stoi(ref, deg, 16000)``.
- SI-SDR: :func:`si_sdr` (scale-invariant SDR, Le Roux et al. 2019), in dB.
- Speaker similarity: cosine of ``resemblyzer.VoiceEncoder`` utterance embeddings
  (each wave through ``resemblyzer.preprocess_wav`` first, as resemblyzer intends).
- Composite measures (``composite``): LLR, WSS, segmental SNR and CSIG / CBAK / COVL of Hu &
  Loizou (2008), :mod:`cleancodec.infer.composite`, fed the pair's wide-band PESQ.

A metric that cannot be computed for a file (e.g. PESQ finds no speech) gives NaN and a note.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cleancodec.infer.composite import composite

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SI_SDR_EPS = 1e-12
DNSMOS_KEYS = {"dnsmos_ovrl": "ovrl_mos", "dnsmos_sig": "sig_mos", "dnsmos_bak": "bak_mos",
               "dnsmos_p808": "p808_mos"}
COMPOSITE_COLUMNS = ("llr", "wss", "segsnr", "csig", "cbak", "covl")
REFERENCE_METRICS = ("pesq", "stoi", "si_sdr", "spk_sim", "composite")
ALL_METRICS = ("dnsmos",) + REFERENCE_METRICS
# a metric that yields several columns → those columns (NaN for all of them when it fails)
METRIC_COLUMNS: dict[str, tuple[str, ...]] = {"dnsmos": tuple(DNSMOS_KEYS),
                                              "composite": COMPOSITE_COLUMNS}
# column name → label in tables
COLUMNS: dict[str, str] = {
    "dnsmos_ovrl": "DNSMOS OVRL", "dnsmos_sig": "DNSMOS SIG", "dnsmos_bak": "DNSMOS BAK",
    "dnsmos_p808": "DNSMOS P.808", "pesq": "PESQ-WB", "stoi": "STOI", "si_sdr": "SI-SDR (dB)",
    "spk_sim": "SpkSim", "csig": "CSIG", "cbak": "CBAK", "covl": "COVL", "llr": "LLR",
    "wss": "WSS", "segsnr": "segSNR (dB)",
}


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (both made zero-mean first)."""
    ref = np.asarray(reference, np.float64)
    est = np.asarray(estimate, np.float64)
    ref = ref - ref.mean()
    est = est - est.mean()
    scale = np.dot(est, ref) / (np.dot(ref, ref) + SI_SDR_EPS)
    target = scale * ref
    residual = est - target
    return float(10.0 * np.log10((np.dot(target, target) + SI_SDR_EPS)
                                 / (np.dot(residual, residual) + SI_SDR_EPS)))


def dnsmos(wave: np.ndarray, personalized: bool = False) -> dict[str, float]:
    """DNSMOS P.835 + P.808 of one wave (clipped to [-1, 1], as speechmos requires)."""
    from speechmos import dnsmos as speechmos_dnsmos

    x = np.clip(np.asarray(wave, np.float32), -1.0, 1.0)
    kind = "dnsmos_personalized" if personalized else "dnsmos"
    scores = speechmos_dnsmos.run(x, SAMPLE_RATE, model_type=kind)
    return {col: float(scores[key]) for col, key in DNSMOS_KEYS.items()}


def pesq_wb(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Wide-band PESQ (ITU-T P.862.2) at 16 kHz."""
    from pesq import pesq

    return float(pesq(SAMPLE_RATE, reference, estimate, "wb"))


def stoi(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Short-time objective intelligibility (classic, not extended)."""
    from pystoi import stoi as pystoi_stoi

    return float(pystoi_stoi(reference, estimate, SAMPLE_RATE, extended=False))


class SpeakerEncoder:
    """resemblyzer's VoiceEncoder (weights ship inside the wheel), loaded once, on CPU."""

    def __init__(self, device: str = "cpu"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from resemblyzer import VoiceEncoder, preprocess_wav
        self._preprocess = preprocess_wav
        self.encoder = VoiceEncoder(device=device, verbose=False)

    def embed(self, wave: np.ndarray) -> np.ndarray:
        """L2-normalised 256-d utterance embedding of a 16 kHz wave."""
        return self.encoder.embed_utterance(self._preprocess(wave, source_sr=SAMPLE_RATE))

    def similarity(self, reference: np.ndarray, estimate: np.ndarray) -> float:
        """Cosine similarity of the two utterance embeddings."""
        a, b = self.embed(reference), self.embed(estimate)
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@dataclass
class Scores:
    """Metric values of one signal (NaN where not computed) plus notes on failures."""

    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def attempt(self, name: str, fn: Callable[[], Any]) -> None:
        """Run ``fn``; store a float or a dict of floats under ``name``; NaN and a note on error."""
        try:
            result = fn()
        except Exception as exc:  # each package raises its own types (NoUtterances, ValueError…)
            self.notes.append(f"{name}: {type(exc).__name__}: {exc}")
            cols = METRIC_COLUMNS.get(name, (name,))
            self.values.update({c: float("nan") for c in cols})
            return
        if isinstance(result, dict):
            self.values.update(result)
        else:
            self.values[name] = result


def score(estimate: np.ndarray, reference: np.ndarray | None, metrics: tuple[str, ...],
          speaker: SpeakerEncoder | None, personalized: bool = False) -> Scores:
    """Every requested metric of ``estimate`` (reference-based ones only with ``reference``).

    Both waves are float32 ``[T]`` at 16 kHz; they are cut to the shorter length first.
    """
    out = Scores()
    if reference is not None:
        n = min(len(reference), len(estimate))
        reference, estimate = reference[:n], estimate[:n]
    if "dnsmos" in metrics:
        out.attempt("dnsmos", lambda: dnsmos(estimate, personalized))
    if reference is None:
        return out
    if "pesq" in metrics:
        out.attempt("pesq", lambda: pesq_wb(reference, estimate))
    if "stoi" in metrics:
        out.attempt("stoi", lambda: stoi(reference, estimate))
    if "si_sdr" in metrics:
        out.attempt("si_sdr", lambda: si_sdr(reference, estimate))
    if "spk_sim" in metrics and speaker is not None:
        out.attempt("spk_sim", lambda: speaker.similarity(reference, estimate))
    if "composite" in metrics:  # reuses the PESQ above (NaN there → NaN composites)
        out.attempt("composite",
                    lambda: composite(reference, estimate, out.values.get("pesq")).as_dict())
    return out


__all__ = ["ALL_METRICS", "COLUMNS", "COMPOSITE_COLUMNS", "DNSMOS_KEYS", "METRIC_COLUMNS",
           "REFERENCE_METRICS", "SAMPLE_RATE",
           "Scores", "SpeakerEncoder", "dnsmos", "pesq_wb", "score", "si_sdr", "stoi"]
