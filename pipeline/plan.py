"""The plan of a cache build: which sources each split draws from, how many windows, which shards.

:func:`make_plan` turns the ``corpus.json`` record into a :class:`Plan` — pure, so every rank
computes the same one — and :meth:`Plan.shard_tasks` cuts each split into :class:`ShardTask`s
of ``windows_per_shard`` consecutive windows, in build order (train first).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cleancodec.pipeline.build_errors import BuildError, NoUsableInputError
from cleancodec.pipeline.cache_config import CacheConfig
from cleancodec.pipeline.inputs import REJECTED_FILE, SPLITS, Inputs
from cleancodec.pipeline.mix import MixConfig
from cleancodec.pipeline.pairing import NOISY_ROLE

log = logging.getLogger(__name__)

SECONDS_PER_HOUR = 3600.0


@dataclass
class Source:
    """A usable input file: ``rel`` to its folder, absolute ``path``, ``length`` at 16 kHz."""

    rel: str
    path: str
    length: int


@dataclass
class SplitPlan:
    """Which sources a split draws from and how many windows it has."""

    name: str
    windows: int
    clean: np.ndarray   # int64 [n_clean] indices into Plan.clean
    noise: np.ndarray   # int64 [n_noise] indices into Plan.noise
    clean_cum: np.ndarray = field(default_factory=lambda: np.zeros(0))  # float64 [n_clean]

    def __post_init__(self) -> None:
        self.clean = np.asarray(self.clean, dtype=np.int64)
        self.noise = np.asarray(self.noise, dtype=np.int64)


@dataclass(frozen=True)
class ShardTask:
    """Shard ``index`` of ``split``: windows ``start`` .. ``start + windows - 1``."""

    split: str
    index: int
    start: int
    windows: int


@dataclass
class Plan:
    """Everything a worker needs to make any window of the cache (picklable)."""

    seed: int
    mix: MixConfig
    max_draws: int
    sample_rate: int
    window_samples: int
    frames: int
    latent_dim: int
    windows_per_shard: int
    storage: str
    dtype: str
    clean: list[Source]
    noise: list[Source]
    rir: list[Source]
    splits: dict[str, SplitPlan]
    noise_shared: bool = False
    noisy_per_clean: int = 1  # K noisy variants per clean window
    # premixed pairs: the noisy files (indices into ``noise``, which then holds the noisy
    # files) of each clean source, K each; empty when the build mixes
    variants: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def premixed(self) -> bool:
        """True when windows are cut from premixed clean / noisy pairs."""
        return bool(self.variants)

    def shard_tasks(self) -> list[ShardTask]:
        """Every shard of every split, in build order (train first)."""
        tasks = []
        for name, sp in self.splits.items():
            for index in range(math.ceil(sp.windows / self.windows_per_shard)):
                start = index * self.windows_per_shard
                tasks.append(ShardTask(name, index, start,
                                       min(self.windows_per_shard, sp.windows - start)))
        return tasks

    @property
    def window_seconds(self) -> float:
        """Length of one window in seconds."""
        return self.window_samples / self.sample_rate

    def audio_hours(self) -> float:
        """Hours of audio in all splits together."""
        total = sum(sp.windows for sp in self.splits.values())
        return total * self.window_samples / self.sample_rate / SECONDS_PER_HOUR


def split_windows(cfg: CacheConfig, split: str, clean_samples: int, window_samples: int,
                  sample_rate: int) -> int:
    """Windows of ``split``: ``<split>_windows``, else ``<split>_hours``, else ``coverage`` ×
    the split's ``clean_samples`` (at least one window when it has any speech)."""
    explicit = getattr(cfg, f"{split}_windows")
    if explicit is not None:
        return int(explicit)
    hours = getattr(cfg, f"{split}_hours")
    if hours is not None:
        return math.ceil(hours * SECONDS_PER_HOUR * sample_rate / window_samples)
    if clean_samples == 0:
        return 0
    return max(1, int(cfg.coverage * clean_samples // window_samples))


def make_plan(cfg: CacheConfig, corpus_record: dict[str, Any], inputs: Inputs,
              constants: dict[str, Any]) -> Plan:
    """Turn a ``corpus.json`` record into a :class:`Plan` (pure; every rank computes the same).

    ``constants``: the codec constants (``sample_rate``, ``hop_length``, ``latent_dim``).
    For premixed pairs (``inputs.premixed``) ``Plan.noise`` holds the noisy files,
    ``Plan.variants`` each clean source's K of them and a clean source's length is its pair's
    (the shorter side). Raises NoUsableInputError when no clean speech for training or no
    noise is usable.
    """
    sr = int(constants["sample_rate"])
    window = int(round(cfg.mix.window_seconds * sr))
    frames = -(-window // int(constants["hop_length"]))
    sources: dict[str, list[Source]] = {}
    split_of: dict[str, list[str]] = {}
    for role in inputs.roles:
        root = getattr(inputs, role)
        entries = [e for e in corpus_record["files"].get(role, []) if e["reason"] is None
                   and e["split"] != "test"]
        sources[role] = [Source(e["rel"], str(Path(root) / e["rel"]),
                                int(e.get("pair_length") or e["length"]))
                         for e in entries]
        split_of[role] = [e["split"] for e in entries]
    variants: list[tuple[int, ...]] = []
    k = cfg.noisy_per_clean
    if inputs.premixed:
        sources["noise"], split_of["noise"] = sources.pop(NOISY_ROLE), split_of.pop(NOISY_ROLE)
        noisy_index = {s.rel: i for i, s in enumerate(sources["noise"])}
        clean_rows = {e["rel"]: e for e in corpus_record["files"]["clean"]}
        variants = [tuple(noisy_index[n] for n in clean_rows[s.rel]["noisy"])
                    for s in sources["clean"]]
        k = int(corpus_record["pairing"]["noisy_per_clean"])
    if not sources["clean"]:
        what = "clean/noisy pairs" if inputs.premixed else "clean speech"
        raise NoUsableInputError(f"{inputs.clean}: no usable {what} (see {REJECTED_FILE})")
    if not sources["noise"]:
        raise NoUsableInputError(f"{inputs.noise}: no usable noise (see {REJECTED_FILE})")
    splits = {}
    for split in SPLITS:
        clean_idx = [i for i, s in enumerate(split_of["clean"]) if s == split]
        noise_idx = [i for i, s in enumerate(split_of["noise"]) if s in (split, "shared")]
        if inputs.premixed:  # each clean file's own noisy files, in clean order
            noise_idx = [n for i in clean_idx for n in variants[i]]
        total = sum(sources["clean"][i].length for i in clean_idx)
        n = split_windows(cfg, split, total, window, sr) if clean_idx else 0
        wanted = cfg.val_windows or cfg.val_hours or (
            cfg.val_windows is None and cfg.val_hours is None and cfg.val_fraction > 0)
        if split == "val" and not clean_idx and wanted:
            log.warning("%s: no speaker is left for the val split (one speaker, or "
                        "val_fraction 0); the cache has no val windows", inputs.clean)
        lengths = np.array([sources["clean"][i].length for i in clean_idx], dtype=np.float64)
        splits[split] = SplitPlan(split, n, clean_idx, noise_idx, np.cumsum(lengths))
    if not len(splits["train"].clean):
        raise NoUsableInputError(f"{inputs.clean}: no usable clean speech for the train split")
    if splits["train"].windows == 0:
        raise BuildError("the train split would have 0 windows (cache.train_windows / "
                         "cache.train_hours / cache.coverage)")
    return Plan(seed=cfg.seed, mix=cfg.mix, max_draws=cfg.max_draws, sample_rate=sr,
                window_samples=window, frames=frames, latent_dim=int(constants["latent_dim"]),
                windows_per_shard=cfg.windows_per_shard, storage=cfg.storage, dtype=cfg.dtype,
                noisy_per_clean=k, variants=variants,
                clean=sources["clean"], noise=sources["noise"], rir=sources["rir"],
                splits=splits, noise_shared=all(s == "shared" for s in split_of["noise"]))


__all__ = ["Plan", "SECONDS_PER_HOUR", "ShardTask", "Source", "SplitPlan", "make_plan",
           "split_windows"]
