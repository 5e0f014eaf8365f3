"""Golden metrics: a fixed clip through a fixed tiny checkpoint gives stored metric values.

A seeded synthetic utterance and noise are mixed into a DNS-named test set; a seeded tiny
denoiser on the seeded tiny random codec is saved as a checkpoint, loaded as ``cleancodec
denoise`` loads it, and run over the noisy folder by the file pipeline (``denoise_path``: read,
chunk, enhance, dry mix, write); ``evaluate_dirs`` scores the result. Every stage is
deterministic, so the numbers below only move when some stage's arithmetic changes: a silent
numerical change in the synthesis, the codec, the denoiser, the chunking, the file writing or a
metric fails this test. If the change is intended, regenerate the values and paste them in::

    .venv/bin/python -m tests.test_golden

(prints the ``EXPECTED`` dict) and say in the commit why they moved.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cleancodec.core.codec import load_codec
from cleancodec.datagen.synth import synth_noise, synth_utterance
from cleancodec.infer.denoise import DenoiseConfig, load_enhancer
from cleancodec.infer.evaluate import EvaluateConfig, evaluate_dirs
from cleancodec.infer.run import denoise_path
from tests.helpers import TINY_CODEC, local_denoiser, save_checkpoint

SR = 16000
SEED, SPEAKER, SECONDS = 7, 11, 4.0
SNR_DB = 15.0
FLOOR_DB = -50.0  # a seeded white floor under the clean clip: no digital silence for LLR
DRY_MIX = 0.8  # most of the noisy input blended back: the scores stay off their floors
METRICS = ["dnsmos", "pesq", "stoi", "si_sdr", "composite"]
# Stable to ~1e-5 against a 1e-5 perturbation of the enhanced wave (PESQ, the composites: 0);
# these bounds leave room for BLAS / CPU differences, far below what a real change moves.
ABS_TOL = {"si_sdr": 2e-3, "segsnr": 2e-3, "wss": 2e-3}
DEFAULT_ABS_TOL = 5e-4

# Regenerate: .venv/bin/python -m tests.test_golden (see the module docstring).
EXPECTED: dict[str, float] = {
    'enhanced_cbak': 2.1386291570956386,
    'enhanced_covl': 1.253623505403921,
    'enhanced_csig': 1.4304554820955175,
    'enhanced_dnsmos_bak': 2.2609756268414265,
    'enhanced_dnsmos_ovrl': 2.096777590090839,
    'enhanced_dnsmos_p808': 2.4033396244049072,
    'enhanced_dnsmos_sig': 3.304530471476057,
    'enhanced_llr': 1.9374813212375508,
    'enhanced_pesq': 1.1728370189666748,
    'enhanced_segsnr': 3.754490800320544,
    'enhanced_si_sdr': 14.127803742389094,
    'enhanced_stoi': 0.9101112114865394,
    'enhanced_wss': 41.78855119866088,
    'noisy_cbak': 2.343024136553594,
    'noisy_covl': 1.4207106910979606,
    'noisy_csig': 1.6757128080021395,
    'noisy_dnsmos_bak': 2.2541953071834038,
    'noisy_dnsmos_ovrl': 2.176465639880791,
    'noisy_dnsmos_p808': 2.4236645698547363,
    'noisy_dnsmos_sig': 3.3073345201697326,
    'noisy_llr': 1.7625576177729538,
    'noisy_pesq': 1.2525031566619873,
    'noisy_segsnr': 6.181785355307162,
    'noisy_si_sdr': 15.001485234396704,
    'noisy_stoi': 0.9161754743069155,
    'noisy_wss': 39.87497853074104,
}


def make_testset(root: Path) -> None:
    """``clean/clean_fileid_0.wav`` and ``noisy/golden_fileid_0.wav`` (pink noise at 15 dB)."""
    clean = synth_utterance(SEED, SPEAKER, 0, SECONDS).astype(np.float64)
    rng = np.random.default_rng(SEED)
    clean += 10 ** (FLOOR_DB / 20) * np.sqrt(np.mean(clean ** 2)) * rng.standard_normal(len(clean))
    noise = synth_noise("pink", SEED, 0, SECONDS).astype(np.float64)
    gain = np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** (SNR_DB / 10))
    for sub, wave, name in (("clean", clean, "clean_fileid_0.wav"),
                            ("noisy", np.clip(clean + gain * noise, -1, 1), "golden_fileid_0.wav")):
        (root / sub).mkdir(parents=True)
        sf.write(root / sub / name, wave.astype(np.float32), SR, subtype="FLOAT")


def golden_scores(root: Path) -> dict[str, float]:
    """Build the test set, the checkpoint and the enhanced folder under ``root``; score it."""
    make_testset(root)
    codec = load_codec(TINY_CODEC)
    checkpoint = save_checkpoint(root / "best.pt", local_denoiser(codec, seed=SEED),
                                 codec.identity)
    cfg = DenoiseConfig(checkpoint=str(checkpoint), mix=DRY_MIX)
    enhancer = load_enhancer(cfg, TINY_CODEC, codec=codec)
    summary = denoise_path(root / "noisy", root / "enhanced", enhancer, cfg, progress=False)
    assert not summary.failed
    result = evaluate_dirs(root / "enhanced", root / "eval", clean=root / "clean",
                           noisy=root / "noisy",
                           cfg=EvaluateConfig(metrics=METRICS, workers=1, spectrograms=0,
                                              score_clean=False, report=False),
                           progress=False)
    (row,) = result.rows
    assert not row["notes"], row["notes"]
    return {k: float(v) for k, v in sorted(row.items()) if isinstance(v, float)}


@pytest.mark.slow  # ~15 s of CPU (DNSMOS twice, the tiny codec), ~30 s on a busy machine
def test_golden_metrics(tmp_path):
    scores = golden_scores(tmp_path)
    assert set(scores) == set(EXPECTED), "columns changed: regenerate EXPECTED"
    moved = {k: (scores[k], v) for k, v in EXPECTED.items()
             if not math.isclose(scores[k], v, rel_tol=0.0,
                                 abs_tol=ABS_TOL.get(k.split("_", 1)[1], DEFAULT_ABS_TOL))}
    assert not moved, f"metrics moved (got, expected): {moved}"
    # the values are informative: neither at the metrics' floors nor equal between rows
    assert 1.0 < EXPECTED["enhanced_csig"] < 5.0 and 1.0 < EXPECTED["noisy_covl"] < 5.0
    assert EXPECTED["enhanced_pesq"] != EXPECTED["noisy_pesq"]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        values = golden_scores(Path(tmp))
    print("EXPECTED: dict[str, float] = {")
    for key, value in values.items():
        print(f"    {key!r}: {value!r},")
    print("}")
