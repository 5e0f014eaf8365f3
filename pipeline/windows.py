"""Making the cache's content: one window (mix), one shard of windows (mix), its latents (encode).

Window ``k`` of split ``s`` is a pure function of (plan, seed, ``s``, ``k``): its random choices
come from :func:`cleancodec.pipeline.mix.window_rng`. A mixing build mixes it
(:func:`make_window`), a premixed one cuts it from a clean / noisy pair
(:func:`make_premixed_window`). A shard is ``windows_per_shard``
consecutive windows (:class:`MixedShard`); :func:`encode_shard` turns its waves into latents.
Storing them is :func:`cleancodec.pipeline.shards.write_shard`'s job.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cleancodec.core.audio import read_audio, read_segment
from cleancodec.pipeline.build_errors import BuildError
from cleancodec.pipeline.mix import (
    draw_mix_params,
    is_mostly_silent,
    level_premixed,
    loop_segment,
    mix_variants,
    noise_offset,
    window_rng,
)
from cleancodec.pipeline.plan import Plan, ShardTask, Source, SplitPlan
from cleancodec.pipeline.shards import META_FIELDS

RIR_CACHE_SIZE = 256
SEED_BITS = 64       # a window seed is a uint64
RNG_STREAMS = 3      # clean draw, noise draw, mixing
VARIANT_STREAMS = 2  # a later noisy variant: noise draw, mixing


@dataclass
class Window:
    """One mixed window: ``clean`` (target) and ``noisy`` float32 ``[T]`` plus its metadata;
    with ``K > 1`` noisy variants, ``variants`` holds ``(noisy, meta)`` of variants 1..K-1."""

    clean: np.ndarray
    noisy: np.ndarray
    meta: dict[str, Any]
    silent_draws: int
    variants: list[tuple[np.ndarray, dict[str, Any]]] = field(default_factory=list)


@functools.lru_cache(maxsize=RIR_CACHE_SIZE)
def _read_rir(path: str, sample_rate: int) -> np.ndarray:
    return read_audio(path, sample_rate)


def _noise_segment(src: Source, length: int, rng: np.random.Generator,
                   sample_rate: int) -> tuple[np.ndarray, int]:
    """A ``length``-sample noise segment from a random offset; short noise loops around."""
    offset = noise_offset(src.length, length, rng)
    if src.length >= length:
        return read_segment(src.path, offset, length, sample_rate), offset
    whole = read_segment(src.path, 0, src.length, sample_rate)
    return loop_segment(whole, offset, length), offset


def _clean_segment(plan: Plan, sp: SplitPlan,
                   rng: np.random.Generator) -> tuple[int, int, np.ndarray, int]:
    """Draw (source, offset) by duration until the segment is not mostly silent.

    Returns (source index, offset, float32 ``[window_samples]`` audio, silent draws skipped).
    """
    length = plan.window_samples
    for attempt in range(plan.max_draws):
        pick = int(np.searchsorted(sp.clean_cum, rng.uniform(0, sp.clean_cum[-1]), side="right"))
        index = int(sp.clean[min(pick, len(sp.clean) - 1)])
        src = plan.clean[index]
        offset = int(rng.integers(0, max(1, src.length - length + 1)))
        audio = read_segment(src.path, offset, length, plan.sample_rate)
        if not is_mostly_silent(audio, plan.sample_rate, plan.mix):
            return index, offset, audio, attempt
    raise BuildError(
        f"split {sp.name}: no window with enough active speech in {plan.max_draws} draws "
        f"(mix.min_active_fraction={plan.mix.min_active_fraction}, "
        f"mix.silence_threshold_db={plan.mix.silence_threshold_db}); "
        "is the clean speech that quiet?")


def _variant_rngs(window_seed: int, variant: int) -> tuple[np.random.Generator, ...]:
    """Noise and mixing generators of noisy variant ``variant`` ``>= 1`` of a window (variant 0
    uses the window's own streams, so a single-noise cache is unchanged)."""
    seq = np.random.SeedSequence([window_seed, variant])
    return tuple(np.random.default_rng(s) for s in seq.spawn(VARIANT_STREAMS))


def make_window(plan: Plan, split: str, k: int) -> Window:
    """Window ``k`` of ``split``: a pure function of the plan, the seed, ``split`` and ``k``.

    ``window_seed`` (a uint64 drawn from ``window_rng(seed, split, k)``) seeds three
    independent generators: clean source/offset, noise source/offset, and mixing (SNR, level,
    reverb, RIR choice). Noisy variant ``v >= 1`` (``plan.noisy_per_clean > 1``) draws its noise
    file and offset, SNR, reverb and RIR from ``(window_seed, v)``; the level and the clean
    target are the window's (:func:`~cleancodec.pipeline.mix.mix_variants`).
    """
    sp = plan.splits[split]
    window_seed = int(window_rng(plan.seed, split, k).integers(0, 2**SEED_BITS, dtype=np.uint64))
    clean_rng, noise_rng, mix_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(window_seed).spawn(RNG_STREAMS))
    clean_index, clean_offset, clean, silent = _clean_segment(plan, sp, clean_rng)
    draws = []
    for v in range(plan.noisy_per_clean):
        n_rng, m_rng = (noise_rng, mix_rng) if v == 0 else _variant_rngs(window_seed, v)
        noise_index = int(sp.noise[int(n_rng.integers(len(sp.noise)))])
        noise, noise_start = _noise_segment(plan.noise[noise_index], plan.window_samples,
                                            n_rng, plan.sample_rate)
        params = draw_mix_params(m_rng, plan.mix, have_rirs=bool(plan.rir))
        rir_index, rir = -1, None
        if params.reverb:
            rir_index = int(m_rng.integers(len(plan.rir)))
        if plan.mix.reverb_target and v > 0:  # the shared target is variant 0's room
            rir_index = draws[0][3]
        if rir_index >= 0:
            rir = _read_rir(plan.rir[rir_index].path, plan.sample_rate)
        draws.append((noise, noise_index, noise_start, rir_index, rir, params))
    results = mix_variants(clean, [d[0] for d in draws], [d[5].snr_db for d in draws],
                           draws[0][5].level_dbfs, [d[4] for d in draws], cfg=plan.mix,
                           sample_rate=plan.sample_rate)
    metas = [{"snr_db": r.snr_db, "level_dbfs": r.level_dbfs, "reverb": int(r.reverb),
              "window_seed": window_seed, "clean_source": clean_index,
              "noise_source": d[1], "clean_offset": clean_offset, "noise_offset": d[2],
              "rir_source": d[3], "clipped": int(r.clipped)} for r, d in zip(results, draws)]
    return Window(results[0].clean, results[0].noisy, metas[0], silent,
                  [(r.noisy, m) for r, m in zip(results[1:], metas[1:])])


def make_premixed_window(plan: Plan, split: str, k: int) -> Window:
    """Window ``k`` of ``split`` of a premixed cache: a pure function of the plan, the seed,
    ``split`` and ``k``.

    The clean file and offset are drawn as in :func:`make_window` (by duration, redrawn while
    mostly silent; a pair's length is its shorter side, samples past it are zeroed on both
    sides); the K noisy windows are cut at the same offset from the clean file's noisy files
    (``plan.variants``). The mixing generator draws the level (variant 0's) and reverb, a later
    variant ``v`` its reverb from ``(window_seed, v)``; reverb convolves the noisy window only
    (:func:`~cleancodec.pipeline.mix.level_premixed`). ``noise_source`` / ``noise_offset`` name
    the noisy file and the shared offset, ``snr_db`` is the pair's SNR in the window.
    """
    sp = plan.splits[split]
    length, sr = plan.window_samples, plan.sample_rate
    window_seed = int(window_rng(plan.seed, split, k).integers(0, 2**SEED_BITS, dtype=np.uint64))
    clean_rng, _, mix_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(window_seed).spawn(RNG_STREAMS))
    clean_index, offset, clean, silent = _clean_segment(plan, sp, clean_rng)
    valid = max(0, min(length, plan.clean[clean_index].length - offset))
    clean[valid:] = 0.0
    noisies, rir_indices, rirs, levels = [], [], [], []
    for v, noisy_index in enumerate(plan.variants[clean_index]):
        m_rng = mix_rng if v == 0 else _variant_rngs(window_seed, v)[1]
        params = draw_mix_params(m_rng, plan.mix, have_rirs=bool(plan.rir))
        rir_index = int(m_rng.integers(len(plan.rir))) if params.reverb else -1
        if plan.mix.reverb_target and v > 0:  # the shared target is variant 0's room
            rir_index = rir_indices[0]
        noisy = read_segment(plan.noise[noisy_index].path, offset, length, sr)
        noisy[valid:] = 0.0
        noisies.append(noisy)
        rir_indices.append(rir_index)
        rirs.append(_read_rir(plan.rir[rir_index].path, sr) if rir_index >= 0 else None)
        levels.append(params.level_dbfs)
    results = level_premixed(clean, noisies, levels[0], rirs, cfg=plan.mix, sample_rate=sr)
    metas = [{"snr_db": r.snr_db, "level_dbfs": r.level_dbfs, "reverb": int(r.reverb),
              "window_seed": window_seed, "clean_source": clean_index,
              "noise_source": noisy_index, "clean_offset": offset, "noise_offset": offset,
              "rir_source": rir_index, "clipped": int(r.clipped)}
             for r, noisy_index, rir_index in zip(results, plan.variants[clean_index],
                                                  rir_indices)]
    return Window(results[0].clean, results[0].noisy, metas[0], silent,
                  [(r.noisy, m) for r, m in zip(results[1:], metas[1:])])


@dataclass
class MixedShard:
    """The mixed windows of one shard, before encoding."""

    task: ShardTask
    clean: np.ndarray   # float32 [n x T]
    noisy: np.ndarray   # float32 [n K x T]: variant v of window i at i K + v
    meta: dict[str, np.ndarray]  # META_FIELDS arrays [n K], one per noisy latent
    silent_draws: int


def mix_shard(plan: Plan, task: ShardTask) -> MixedShard:
    """Mix the windows of one shard: clean waves ``[n x T]``, noisy ``[n K x T]`` and metadata
    arrays ``[n K]``."""
    rows = range(task.start, task.start + task.windows)
    make = make_premixed_window if plan.premixed else make_window
    windows = [make(plan, task.split, k) for k in rows]
    pairs = [p for w in windows for p in [(w.noisy, w.meta), *w.variants]]
    meta = {name: np.array([m[name] for _, m in pairs], dtype=dtype)
            for name, dtype in META_FIELDS.items()}
    return MixedShard(task, np.stack([w.clean for w in windows]),
                      np.stack([x for x, _ in pairs]), meta,
                      sum(w.silent_draws for w in windows))


def encode_shard(codec: Any, mixed: MixedShard, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Encode clean ``[n x T]`` and noisy ``[n K x T]`` waves into ``[n x D x F]`` and
    ``[n K x D x F]`` arrays in ``dtype`` (each clean window encoded once for its K noises).

    Works batch by batch (``codec.cfg.batch_size`` windows) into preallocated arrays, so a shard
    never holds a float32 copy of all its latents. Raises BuildError when a latent is not finite
    after the cast (float16 overflow).
    """
    batch = max(1, int(codec.cfg.batch_size))
    out = []
    for name, waves in (("clean", mixed.clean), ("noisy", mixed.noisy)):
        latents: np.ndarray | None = None
        for start in range(0, len(waves), batch):
            z = codec.encode(waves[start:start + batch]).cpu().numpy()
            if latents is None:
                latents = np.empty((len(waves), *z.shape[1:]), dtype=dtype)
            part = latents[start:start + len(z)]
            part[...] = z
            if not np.all(np.isfinite(part)):
                raise BuildError(
                    f"{mixed.task.split} shard {mixed.task.index} ({name}): latents overflow "
                    f"{dtype} (max |z| = {float(np.max(np.abs(z))):.3g}); use dtype float32")
        out.append(latents)
    return out[0], out[1]


__all__ = ["MixedShard", "Window", "encode_shard", "make_premixed_window", "make_window",
           "mix_shard"]
