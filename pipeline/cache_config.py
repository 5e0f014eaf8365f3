"""The ``cache`` section of a profile: :class:`CacheConfig`, the schema of a cache build.

A plain dataclass with defaults, loaded by :func:`cleancodec.core.config.load_section` (an
OmegaConf structured config), so its fields stay simple types: int / float / str / bool,
``X | None``, lists, and the nested :class:`~cleancodec.pipeline.mix.MixConfig` /
:class:`~cleancodec.datagen.synth.SynthConfig`. Like every schema it checks its values in
``__post_init__`` (:func:`cleancodec.core.config.require`), naming the key (``cache.dtype``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cleancodec.core.config import require
from cleancodec.datagen.synth import SynthConfig
from cleancodec.pipeline import corpus as corpus_mod
from cleancodec.pipeline.manifest import STORAGES
from cleancodec.pipeline.mix import MixConfig
from cleancodec.pipeline.shards import COMPRESSORS, DTYPES

CORPUS_KINDS = ("dirs", "synthetic")
SIZED_FIELDS = ("train_windows", "val_windows", "train_hours", "val_hours")


@dataclass
class CacheConfig:
    """The ``cache`` section of a profile.

    Window counts per split: ``train_windows`` / ``val_windows`` when set, else
    ``train_hours`` / ``val_hours``, else ``coverage`` × the split's clean audio (1.0: about
    every second of speech once). Input folders given on the command line override
    ``clean`` / ``noise`` / ``noisy`` / ``rir``; ``corpus: synthetic`` generates a corpus under
    ``synthetic_dir`` when no folders are given. ``noisy`` (premixed clean / noisy pairs,
    :mod:`cleancodec.pipeline.pairing`) replaces ``noise``: the pairs are cut, levelled and
    encoded as they are, and K comes from the pairs, not from ``noisy_per_clean``.
    """

    storage: str = "zarr"
    dtype: str = "float16"
    windows_per_shard: int = 256
    train_windows: int | None = None
    val_windows: int | None = None
    train_hours: float | None = None
    val_hours: float | None = None
    coverage: float = 1.0
    seed: int = 1234
    val_fraction: float = 0.05
    clean: str | None = None
    noise: str | None = None
    noisy: str | None = None
    rir: str | None = None
    corpus: str = "dirs"
    synthetic_dir: str = "data/tiny_corpus"
    synthetic: SynthConfig = field(default_factory=SynthConfig)
    speaker_source: str = "auto"
    speaker_patterns: list[str] = field(
        default_factory=lambda: list(corpus_mod.DEFAULT_SPEAKER_PATTERNS))
    split_noise: bool = True
    max_draws: int = 100
    # Latent compression of zarr caches. none (default): windows are read as indexed byte
    # ranges at memory speed; blosc-zstd saves ~9 % of the bytes on the demo cache (bench/loader.py)
    # but every read then goes through zarr's codec pipeline.
    compressor: str = "none"
    compression_level: int = 3
    # K noisy variants per clean window: each clean window is encoded once and mixed with K
    # independent noise draws (K training pairs; train_windows / val_windows / hours count clean
    # windows). Encodes per pair (1 + K) / K, bytes per pair (1 + K) / 2K of a K = 1 pair.
    # Measured on the demo cache (bench/demo_choices.py, BENCHMARKS.md; DAC-16k architecture at
    # random init, demo corpus, 160 encodes per train split, demo profile 300 steps, seed 0;
    # held-out gain on one common val split, lower is better):
    #   K=1: 2.00 encodes and 614 KB per pair (3 s DAC-16k float16), gain 0.8493
    #   K=2: 1.50 encodes, 461 KB, gain 0.8345
    #   K=4: 1.25 encodes, 384 KB, gain 0.8511  (+0.2 % vs K=1)
    # and on the tiny profile (bench/variants.py, 2 seeds): 0.9150 / 0.9096 / 0.9172.
    # K=4 is the only one of these that meets <= 0.65x the encodes and bytes of K=1, at a gain
    # equal to K=1's; K=2 gave the best gain in both studies (1.7 % / 0.6 % better than K=1) for
    # 0.75x the cost: set cache.noisy_per_clean=2 when encodes are cheap for you.
    noisy_per_clean: int = 4
    rank_timeout_minutes: float = 120.0
    mix: MixConfig = field(default_factory=MixConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.storage in STORAGES, "storage", f"must be one of {STORAGES}"),
            (self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}"),
            (self.windows_per_shard >= 1, "windows_per_shard", "must be >= 1"),
            (self.noisy_per_clean >= 1, "noisy_per_clean", "must be >= 1"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)"),
            (self.corpus in CORPUS_KINDS, "corpus", f"must be one of {CORPUS_KINDS}"),
            (self.compressor in COMPRESSORS, "compressor", f"must be one of {COMPRESSORS}"),
            (self.max_draws >= 1, "max_draws", "must be >= 1"),
            (self.coverage > 0, "coverage", "must be > 0"),
            (self.speaker_source in corpus_mod.SPEAKER_SOURCES, "speaker_source",
             f"must be one of {corpus_mod.SPEAKER_SOURCES}"),
        ]
        for name in SIZED_FIELDS:
            value = getattr(self, name)
            checks.append((value is None or value >= 0, name, "must be >= 0"))
        for ok, name, problem in checks:
            require(ok, f"cache.{name}", f"{problem}, got {getattr(self, name)!r}")


__all__ = ["CORPUS_KINDS", "CacheConfig"]
