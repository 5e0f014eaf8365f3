"""infer.denoise: chunk geometry, streaming assembly, chunked-vs-whole agreement, checkpoints."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from cleancodec.core.codec import CodecConfig, load_codec
from cleancodec.core.config import ConfigError, load_section, to_dict
from cleancodec.infer.chunking import ChunkAssembler, ChunkPlanner, ChunkSpec
from cleancodec.infer.denoise import (
    DenoiseConfig,
    Enhancer,
    chunk_spec,
    enhance_signal,
    enhance_whole,
    find_default_checkpoint,
    load_enhancer,
    snr_db,
)
from cleancodec.infer.receptive import ChainField
from cleancodec.trainer.checkpoint import CheckpointError
from cleancodec.trainer.config import TrainConfig, resolve_preset
from cleancodec.trainer.models import Denoiser, build_denoiser
from tests.helpers import TINY_CODEC as TINY
from tests.helpers import save_checkpoint, speechlike

HOP = 320
SR = 16000
# Measured with these settings on the 45 s two-channel signal below (tiny codec, shipped chunk
# geometry): the codec alone agrees to 130.6 dB (float rounding), so 80 dB leaves margin for
# other BLAS builds; the denoiser with trained-like GRN gains agrees to 25.2 / 29.1 dB: GRN
# normalises by statistics over the whole sequence, so a chunk sees other statistics than the
# whole file (BENCHMARKS.md has the DAC-16k figures).
BYPASS_SNR_DB = 80.0
GRN_DENOISER_SNR_DB = 20.0


@pytest.fixture(scope="module")
def codec():
    return load_codec(TINY)


def trained_like_denoiser(codec, seed: int = 0, grn: bool = True) -> Denoiser:
    """A Denoiser whose zero-initialised head and GRN gains are set to random values, so that
    it changes the latents the way a trained one does (a fresh one is the identity)."""
    torch.manual_seed(seed)
    model = Denoiser(codec.latent_dim, width=32, depth=2)
    with torch.no_grad():
        z = codec.encode(speechlike(3.0, seed))
        model.set_latent_stats(z.mean((0, 2)), z.std((0, 2)))
        torch.nn.init.normal_(model.head.weight, std=0.05)
        if grn:
            for block in model.blocks:
                block.grn.gamma.normal_(0.0, 0.5)
                block.grn.beta.normal_(0.0, 0.1)
    return model.eval()


# --- geometry ---------------------------------------------------------------------------------


def identity_chunks(x: np.ndarray, spec: ChunkSpec, blocks: list[int]):
    planner = ChunkPlanner(spec, x.shape[0], HOP)
    assembler = ChunkAssembler(spec)
    chunks, out, pos = [], [], 0
    for size in blocks + [x.shape[1]]:
        for c in planner.push(x[:, pos:pos + size]):
            chunks.append(c)
            out.append(assembler.add(c.start, c.samples))
        pos += size
        if pos >= x.shape[1]:
            break
    for c in planner.finish():
        chunks.append(c)
        out.append(assembler.add(c.start, c.samples))
    out.append(assembler.finish(planner.total))
    return chunks, np.concatenate(out, axis=1)


@pytest.mark.parametrize("n", [1, 319, 320, 20 * HOP, 20 * HOP + 1, 57 * HOP + 13, 123_457])
def test_identity_processing_reassembles_the_signal_exactly(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((2, n)).astype(np.float32)
    spec = ChunkSpec.from_frames(20, 3, 2, HOP)
    chunks, y = identity_chunks(x, spec, blocks=list(rng.integers(1, 9000, 40)))
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1e-6)
    padded = -(-n // HOP) * HOP
    if n > spec.length:
        assert {c.samples.shape[1] for c in chunks} == {spec.length}
        assert chunks[-1].start + spec.length == padded  # the last chunk ends at the padded end
    else:
        assert len(chunks) == 1 and chunks[0].samples.shape[1] == padded
    assert all(c.start % HOP == 0 for c in chunks)
    # zeros past the end, exactly like whole-signal padding
    last = chunks[-1]
    assert not np.any(last.samples[:, n - last.start:])


def test_block_sizes_do_not_change_the_chunks():
    x = np.random.default_rng(1).standard_normal((1, 40_000)).astype(np.float32)
    spec = ChunkSpec.from_frames(30, 4, 2, HOP)
    a, _ = identity_chunks(x, spec, blocks=[40_000])
    b, _ = identity_chunks(x, spec, blocks=[7] * 100 + [3001] * 20)
    assert [c.start for c in a] == [c.start for c in b]
    for ca, cb in zip(a, b):
        np.testing.assert_array_equal(ca.samples, cb.samples)


def test_crossfade_weights_sum_to_one_between_different_chunks():
    spec = ChunkSpec.from_frames(10, 2, 3, HOP)
    asm = ChunkAssembler(spec)
    first = np.full((1, spec.length), 1.0, np.float32)
    second = np.full((1, spec.length), 3.0, np.float32)
    head = asm.add(0, first)
    out = np.concatenate([head, asm.add(spec.stride, second), asm.finish(spec.stride
                                                                          + spec.length)], 1)[0]
    assert out.shape == (spec.stride + spec.length,)
    assert np.all((out >= 1.0) & (out <= 3.0))
    assert np.all(np.diff(out) >= 0)  # a monotone blend from one chunk to the next
    ramp = np.flatnonzero((out > 1.0) & (out < 3.0))
    assert len(ramp) == spec.crossfade
    # the crossfade sits in the middle of the overlap, `context` away from both chunk edges
    assert ramp[0] == spec.stride + spec.context
    assert spec.length - 1 - ramp[-1] == spec.context


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="chunk"):
        ChunkSpec.from_frames(10, 5, 1, HOP)
    with pytest.raises(ValueError, match="crossfade"):
        DenoiseConfig(chunk_frames=4, crossfade_frames=4)
    with pytest.raises(ValueError, match="mix"):
        DenoiseConfig(mix=1.5)


# --- the model path ---------------------------------------------------------------------------


def test_enhancer_keeps_length_and_batches_rows_independently(codec):
    enh = Enhancer(codec, trained_like_denoiser(codec))
    a, b = speechlike(1.3, 1), speechlike(1.3, 2)
    both = enh(np.stack([a, b]))
    assert both.shape == (2, len(a)) and both.dtype == np.float32
    np.testing.assert_allclose(both[1], enh(b[None])[0], atol=1e-5)
    assert snr_db(both[0], a) < 30  # the path changes the signal (random codec)


@pytest.mark.parametrize("grn,threshold", [(False, BYPASS_SNR_DB),
                                           (True, GRN_DENOISER_SNR_DB)])
def test_chunked_matches_whole_signal_on_a_long_input(codec, grn, threshold):
    x = np.stack([speechlike(45.0, 3), speechlike(45.0, 4)])
    denoiser = trained_like_denoiser(codec, grn=grn) if grn else None
    enh = Enhancer(codec, denoiser)
    cfg = DenoiseConfig()  # the shipped chunk geometry (conf/denoise.yaml)
    spec = chunk_spec(cfg, enh)
    assert x.shape[1] > 4 * spec.length
    whole = enhance_whole(enh, x)
    chunked = enhance_signal(enh, x, spec, batch_size=3)
    assert chunked.shape == x.shape
    for ch in range(2):
        assert snr_db(whole[ch], chunked[ch]) > threshold


def test_context_is_what_makes_chunks_agree(codec):
    x = speechlike(8.0, 5)
    enh = Enhancer(codec, None)
    whole = enhance_whole(enh, x)
    no_context = enhance_signal(enh, x, ChunkSpec.from_frames(100, 0, 0, HOP))
    context = enhance_signal(enh, x, ChunkSpec.from_frames(100, 24, 2, HOP))
    assert snr_db(whole, context) > BYPASS_SNR_DB
    assert snr_db(whole, no_context) < snr_db(whole, context) - 40


# --- checkpoints ------------------------------------------------------------------------------


def test_load_enhancer_uses_the_checkpoint(tmp_path, codec):
    model = trained_like_denoiser(codec, seed=1)
    path = save_checkpoint(tmp_path / "best.pt", model, codec.identity, step=42)
    enh = load_enhancer(DenoiseConfig(checkpoint=str(path)), TINY, codec=codec)
    assert enh.info["step"] == 42 and not enh.bypass
    z = codec.encode(speechlike(1.0))
    with torch.no_grad():
        torch.testing.assert_close(enh.denoiser(z), model(z))
    bypass = load_enhancer(DenoiseConfig(bypass=True, checkpoint="/nonexistent.pt"), TINY,
                           codec=codec)
    assert bypass.bypass and bypass.describe()["codec_random_init"]


def test_checkpoint_of_another_codec_is_refused_unless_allowed(tmp_path, codec):
    other = dict(codec.identity, seed=99)
    path = save_checkpoint(tmp_path / "best.pt", trained_like_denoiser(codec), other)
    with pytest.raises(CheckpointError, match="allow-codec-mismatch"):
        load_enhancer(DenoiseConfig(checkpoint=str(path)), TINY, codec=codec)
    enh = load_enhancer(DenoiseConfig(checkpoint=str(path), allow_codec_mismatch=True), TINY,
                        codec=codec)
    assert not enh.bypass


def test_latent_size_mismatch_is_a_clear_error(tmp_path, codec):
    model = Denoiser(codec.latent_dim * 2, width=16, depth=1)
    path = save_checkpoint(tmp_path / "best.pt", model, codec.identity)
    with pytest.raises(CheckpointError, match=f"{codec.latent_dim}-channel"):
        load_enhancer(DenoiseConfig(checkpoint=str(path), allow_codec_mismatch=True), TINY,
                      codec=codec)


def test_default_checkpoint_is_the_newest_best(tmp_path, codec):
    with pytest.raises(CheckpointError, match="make train"):
        find_default_checkpoint(tmp_path / "runs")
    model = trained_like_denoiser(codec)
    old = save_checkpoint(tmp_path / "runs" / "a" / "best.pt", model, codec.identity)
    new = save_checkpoint(tmp_path / "runs" / "b" / "best.pt", model, codec.identity)
    save_checkpoint(tmp_path / "runs" / "c" / "latest.pt", model, codec.identity)
    past = time.time() - 100
    os.utime(old, (past, past))
    assert find_default_checkpoint(tmp_path / "runs") == new
    os.utime(new, (past - 100, past - 100))
    assert find_default_checkpoint(tmp_path / "runs") == old
    # with a codec: the newest checkpoint trained on that codec's latents
    foreign = save_checkpoint(tmp_path / "runs" / "d" / "best.pt", model,
                              dict(codec.identity, seed=3))
    assert find_default_checkpoint(tmp_path / "runs") == foreign
    assert find_default_checkpoint(tmp_path / "runs", codec.identity) == old
    assert find_default_checkpoint(tmp_path / "runs", dict(codec.identity, seed=4)) == foreign
    enh = load_enhancer(DenoiseConfig(runs_dir=str(tmp_path / "runs")), TINY, codec=codec)
    assert enh.checkpoint == str(old)


def test_default_checkpoint_reads_codec_identity_from_sidecars(tmp_path, codec, monkeypatch):
    """Runs with a JSON sidecar naming the codec are never torch.load-ed; others are."""
    import json

    import cleancodec.infer.denoise as denoise_mod

    model = trained_like_denoiser(codec)
    runs = tmp_path / "runs"
    # newest: the run's config.json (the trainer writes it) names another codec
    foreign = save_checkpoint(runs / "foreign" / "best.pt", model, codec.identity)
    (runs / "foreign" / "config.json").write_text(
        json.dumps({"codec_identity": dict(codec.identity, seed=5)}))
    # then: a checkpoint's own best.json names this codec (and beats config.json)
    mine = save_checkpoint(runs / "mine" / "best.pt", model, dict(codec.identity, seed=6))
    (runs / "mine" / "best.json").write_text(json.dumps({"codec_identity": codec.identity}))
    (runs / "mine" / "config.json").write_text(json.dumps({"codec_identity": {"kind": "x"}}))
    # oldest: no sidecar at all (an older run) → read from the checkpoint itself
    legacy = save_checkpoint(runs / "legacy" / "best.pt", model, dict(codec.identity, seed=7))
    (runs / "legacy" / "config.json").write_text("{torn")
    now = time.time()
    for age, path in enumerate((foreign, mine, legacy)):
        os.utime(path, (now - 100 * age, now - 100 * age))
    loaded = []
    real_load = denoise_mod.load_checkpoint
    monkeypatch.setattr(denoise_mod, "load_checkpoint",
                        lambda path: loaded.append(path) or real_load(path))
    assert find_default_checkpoint(runs, codec.identity) == mine
    assert loaded == []
    assert find_default_checkpoint(runs, dict(codec.identity, seed=7)) == legacy
    assert loaded == [legacy]
    assert find_default_checkpoint(runs, dict(codec.identity, seed=8)) == foreign


LOCAL_DENOISER_SNR_DB = 90.0  # goal for a denoiser whose statistics are all local in time


@pytest.mark.parametrize("kind, window", [("none", 0), ("window", 9)])
def test_local_statistics_denoiser_chunked_equals_whole(codec, kind, window):
    """chunk_frames 150 vs 4000 on a 60 s file (tiny profile geometry), context derived from
    the receptive field: float rounding only."""
    torch.manual_seed(1)
    model = Denoiser(codec.latent_dim, width=32, depth=2, grn=kind, grn_window=window)
    with torch.no_grad():
        z = codec.encode(speechlike(3.0, 1))
        model.set_latent_stats(z.mean((0, 2)), z.std((0, 2)))
        for p in [*model.blocks.parameters(), *model.head.parameters()]:
            p.normal_(0.0, 0.05)
    enh = Enhancer(codec, model.eval())
    x = speechlike(60.0, 6)
    short = enhance_signal(enh, x, chunk_spec(DenoiseConfig(chunk_frames=150), enh))
    long = enhance_signal(enh, x, chunk_spec(DenoiseConfig(chunk_frames=4000), enh))
    assert snr_db(long, short) >= LOCAL_DENOISER_SNR_DB


# --- the context comes from the receptive field -----------------------------------------------

# DAC 16 kHz with the default denoiser (preset "medium": depth 4, kernel 7, grn none, ±12
# frames): the chain reaches 9541 samples before and 9533 after a block, so chunks drop 30
# frames (600 ms) at each inner edge
DAC_DEFAULT_EDGE_FRAMES = 30
TINY_CHUNKED_SNR_DB = 100.0  # tiny codec + local denoiser, derived context (measured ~128 dB)


class BoxEngine:
    """A stand-in enhancer with a receptive field that does not fade: every output sample is
    the sum of the input samples within ``reach`` on each side (zeros past the edges), so any
    context shorter than ``reach`` changes the output by whole input samples."""

    sample_rate = SR
    hop = HOP

    def __init__(self, reach_frames: int):
        self.reach = reach_frames * HOP
        self.chain_field = chain_field_stub(reach_frames)

    def __call__(self, waves: np.ndarray) -> np.ndarray:
        """float32 ``[B x T]`` → ``[B x T]`` box sums of width ``2 * reach + 1``."""
        padded = np.pad(waves.astype(np.float64), ((0, 0), (self.reach + 1, self.reach)))
        cums = np.cumsum(padded, axis=1)
        width = 2 * self.reach + 1
        return (cums[:, width:] - cums[:, :-width]).astype(np.float32)


def chain_field_stub(reach_frames: int):
    """A receptive field of ``reach_frames`` frames each side, in ``ChainField``'s form."""
    reach = reach_frames * HOP
    return ChainField(sample_rate=SR, hop=HOP, encoder_past=0, encoder_future=0,
                      decoder_past=0, decoder_future=0, denoiser=reach_frames, exact=True,
                      context=reach, lookahead=reach)


def test_derived_context_is_exactly_enough_for_a_field_that_does_not_fade():
    engine = BoxEngine(reach_frames=7)
    x = np.random.default_rng(3).standard_normal(30_000).astype(np.float32)
    whole = enhance_whole(engine, x)
    cfg = DenoiseConfig(chunk_frames=20, crossfade_frames=2)
    spec = chunk_spec(cfg, engine)
    assert spec.context == 7 * HOP
    np.testing.assert_allclose(enhance_signal(engine, x, spec), whole, atol=1e-3)
    # one frame less, and the kept samples miss input that changes them
    short = ChunkSpec.from_frames(cfg.chunk_frames, 6, cfg.crossfade_frames, HOP)
    assert snr_db(whole, enhance_signal(engine, x, short)) < 40


def test_tiny_codec_chunked_with_derived_context_equals_whole(codec):
    """Short chunks (the smallest the derived context allows, plus a few frames) on the tiny
    codec with a local-statistics denoiser: chunked = whole to float rounding."""
    torch.manual_seed(2)
    model = Denoiser(codec.latent_dim, width=32, depth=2, grn="none")
    with torch.no_grad():
        z = codec.encode(speechlike(3.0, 2))
        model.set_latent_stats(z.mean((0, 2)), z.std((0, 2)))
        for p in [*model.blocks.parameters(), *model.head.parameters()]:
            p.normal_(0.0, 0.05)
    enh = Enhancer(codec, model.eval())
    field = enh.chain_field
    edge = field.edge_frames()
    assert (edge - 1) * HOP < max(field.context, field.lookahead) <= edge * HOP
    with pytest.raises(ValueError, match=f"at least {2 * edge + 3}"):
        chunk_spec(DenoiseConfig(chunk_frames=2 * edge + 2, crossfade_frames=2), enh)
    spec = chunk_spec(DenoiseConfig(chunk_frames=2 * edge + 10, crossfade_frames=2), enh)
    assert spec.context == edge * HOP
    x = speechlike(12.0, 6)
    assert snr_db(enhance_whole(enh, x), enhance_signal(enh, x, spec)) >= TINY_CHUNKED_SNR_DB


def test_dac16k_default_denoiser_context_covers_the_computed_field():
    """DAC-16k architecture at random init and the default denoiser: only the field and the
    geometry are computed (no forward pass)."""
    codec = load_codec(CodecConfig(weights="random", random_arch="dac16k", num_threads=1))
    denoiser = build_denoiser({"latent_dim": codec.latent_dim,
                               **to_dict(resolve_preset(TrainConfig()).denoiser)})
    enh = Enhancer(codec, denoiser)
    field = enh.chain_field
    spec = chunk_spec(DenoiseConfig(), enh)
    assert field.exact and field.denoiser == denoiser.receptive_field()
    assert spec.context >= field.context and spec.context >= field.lookahead
    assert spec.context - HOP < max(field.context, field.lookahead)  # one frame less falls short
    assert spec.context == DAC_DEFAULT_EDGE_FRAMES * HOP
    assert spec.stride > 0
    assert enh.describe()["chunk_context_frames"] == DAC_DEFAULT_EDGE_FRAMES


def test_a_profile_setting_the_context_by_hand_is_refused(tmp_path):
    profile = tmp_path / "old.yaml"
    profile.write_text("denoise:\n  chunk_frames: 300\n  context_frames: 48\n")
    with pytest.raises(ConfigError, match=r"old\.yaml.*denoise\.context_frames was removed.*"
                                          r"derived from the receptive field"):
        load_section(profile, "denoise", DenoiseConfig)
    with pytest.raises(ConfigError, match="context_frames was removed"):
        load_section(None, "denoise", DenoiseConfig, ["denoise.context_frames=48"])
