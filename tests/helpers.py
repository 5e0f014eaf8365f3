"""Helpers shared by several test modules: test signals, tiny models and checkpoints, the tiny
profiles, and small cache builds. Fixtures live in ``tests/conftest.py``."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from cleancodec.core.codec import CodecConfig
from cleancodec.datagen.synth import synth_noise, synth_utterance
from cleancodec.pipeline.build import CacheConfig, build_cache
from cleancodec.pipeline.mix import MixConfig
from cleancodec.trainer.checkpoint import FORMAT_VERSION, save_atomic
from cleancodec.trainer.config import TrainConfig, load_train_config
from cleancodec.trainer.models import Denoiser

REPO = Path(__file__).resolve().parents[1]
SR = 16000
TINY_PROFILE = "conf/tiny.yaml"  # the shipped tiny profile (relative: tests run from REPO)
TINY_CODEC = CodecConfig(weights="random", random_arch="tiny", random_seed=0, num_threads=1)

# --- signals ----------------------------------------------------------------------------------


def speechlike(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Harmonic bursts with pauses plus a little noise: float32 ``[T]``, peak < 1."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    gate = (np.sin(2 * np.pi * 1.7 * t + rng.uniform(0, 6)) > -0.2).astype(float)
    x = 0.2 * voiced * gate + 0.01 * rng.standard_normal(n)
    return (0.8 * x / np.max(np.abs(x))).astype(np.float32)


def voiced_tone(seconds: float, f0: float = 140.0, seed: int = 0,
                level: float = 0.3) -> np.ndarray:
    """Harmonic tone with a 4 Hz syllable envelope at 16 kHz: float32 ``[T]``, peak ``level``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 12))
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6))
    x = tone * env
    return (level * x / np.max(np.abs(x))).astype(np.float32)


def padded(x: np.ndarray, pad_s: float = 0.3) -> np.ndarray:
    """``x`` ``[T]`` with ``pad_s`` seconds of silence on both sides (16 kHz)."""
    pad = np.zeros(int(pad_s * SR), dtype=np.float32)
    return np.concatenate([pad, x, pad])


def write_wav(path: Path, audio: np.ndarray) -> None:
    """Write 16 kHz ``audio`` to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, SR)


# --- models and checkpoints -------------------------------------------------------------------


def save_checkpoint(path: Path, model: Denoiser, identity: dict, step: int = 7) -> Path:
    """A checkpoint in the trainer's format (the fields ``load_denoiser`` reads)."""
    save_atomic({"format_version": FORMAT_VERSION, "model_args": dict(model.model_args),
                 "denoiser": model.state_dict(), "step": step, "config": {},
                 "codec_identity": identity, "val": {}}, path)
    return path


def local_denoiser(codec, kind: str = "none", window: int = 0, seed: int = 1) -> Denoiser:
    """A small denoiser whose zero-initialised head and blocks are randomised (a fresh one is
    the identity)."""
    torch.manual_seed(seed)
    model = Denoiser(codec.latent_dim, width=16, depth=2, grn=kind, grn_window=window)
    with torch.no_grad():
        z = codec.encode(speechlike(2.0, seed))
        model.set_latent_stats(z.mean((0, 2)), z.std((0, 2)))
        for p in [*model.blocks.parameters(), *model.head.parameters()]:
            p.normal_(0.0, 0.05)
    return model.eval()


# --- training ---------------------------------------------------------------------------------


def tiny_cfg(**changes) -> TrainConfig:
    """The shipped tiny profile, single-threaded and quiet, with ``changes``."""
    cfg = load_train_config(REPO / TINY_PROFILE)
    data = dataclasses.replace(cfg.data, num_workers=changes.pop("num_workers", 0))
    return dataclasses.replace(cfg, data=data, num_threads=1, progress=False, **changes)


# --- a test set of unseen synthetic speech ----------------------------------------------------

CLIPS = 2
CLIP_SECONDS = 5.0
SNR_DB = 5.0
TEST_SPEAKER = 11  # not among the synthetic corpus's training speakers


def write_testset(root: Path) -> None:
    """DNS-named clean / noisy pairs of unseen synthetic speech mixed at ``SNR_DB``."""
    for sub in ("clean", "noisy"):
        (root / sub).mkdir(parents=True)
    for i in range(CLIPS):
        clean = synth_utterance(7, TEST_SPEAKER, i, CLIP_SECONDS)
        noise = synth_noise(("pink", "white")[i % 2], 7, i, CLIP_SECONDS)
        gain = np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** (SNR_DB / 10))
        sf.write(root / "clean" / f"clean_fileid_{i}.wav", clean, SR)
        sf.write(root / "noisy" / f"synth_snr{SNR_DB:g}_tl-25_fileid_{i}.wav",
                 np.clip(clean + gain * noise, -1, 1), SR)


# --- small cache builds (pipeline.build) ------------------------------------------------------

BUILD_CODEC = CodecConfig(weights="random", random_seed=0, random_arch="tiny", device="cpu",
                          batch_size=4, num_threads=1)


def small_cache_cfg(**overrides) -> CacheConfig:
    """8 one-second windows (6 train, 2 val) in shards of 2, with ``overrides``."""
    base = CacheConfig(train_windows=6, val_windows=2, windows_per_shard=2, seed=5,
                       noisy_per_clean=1,
                       val_fraction=0.25, mix=MixConfig(window_seconds=1.0))
    return dataclasses.replace(base, **overrides)


def build_small_cache(corpus, out: Path, cfg: CacheConfig | None = None,
                      codec: CodecConfig = BUILD_CODEC, **kw):
    """``build_cache`` of ``corpus`` (a ``make_tiny_corpus`` result) into ``out``, quietly."""
    return build_cache(cfg or small_cache_cfg(), codec, corpus.clean_dir, corpus.noise_dir,
                       out_dir=out, progress=False, **kw)


# --- evaluation folders (infer.evaluate / infer.report) ---------------------------------------


def write_eval_folders(root: Path, n: int, seconds: float = 1.0) -> Path:
    """``root/{clean,noisy,enhanced,codec}/clip<i>.wav``: speech-like clips, noisy ones, and
    "enhanced" ones whose leftover noise grows with ``i`` (so clip0 scores best, clip<n-1>
    worst); the codec-alone copies are the clean clips plus a little noise."""
    rng = np.random.default_rng(0)
    for i in range(n):
        clean = speechlike(seconds, seed=i)
        noise = (0.05 * rng.standard_normal(clean.size)).astype(np.float32)
        for sub, audio in (("clean", clean), ("noisy", clean + noise),
                           ("enhanced", clean + (0.05 + 0.9 * i / max(n - 1, 1)) * noise),
                           ("codec", clean + 0.02 * noise)):
            write_wav(root / sub / f"clip{i}.wav", np.clip(audio, -1.0, 1.0))
    return root


def split_arrays(cache: Path, split: str = "train"):
    """``(clean, noisy, metas)`` of a cache split, read with the production reader."""
    from cleancodec.pipeline.manifest import load_manifest
    from cleancodec.trainer.data import open_split, read_split

    return read_split(open_split(cache, load_manifest(cache), split))


def assert_windowed_fallback(engine, refusal: str, warning: str, caplog) -> None:
    """``engine`` cannot stream statefully: ``open_stream(kind="stateful")`` raises a
    StreamError matching ``refusal``, and ``open_stream`` falls back to the windowed stream
    with a warning containing ``warning`` (``caplog``: pytest's fixture)."""
    import logging

    import pytest

    from cleancodec.infer.stream import StreamDenoiser, StreamError
    from cleancodec.infer.streamio import open_stream

    with pytest.raises(StreamError, match=refusal):
        open_stream(engine, 5, kind="stateful")
    with caplog.at_level(logging.WARNING):
        stream = open_stream(engine, 5)
    assert type(stream) is StreamDenoiser and warning in caplog.text
