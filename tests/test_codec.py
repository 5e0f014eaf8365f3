"""pipeline.codec on the tiny random-init architecture (hop 320, latent dim 64)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from cleancodec.core.codec import (
    CodecConfig,
    CodecWeightsError,
    default_weights_path,
    import_dac,
    load_codec,
    save_random_release_file,
)

TINY = CodecConfig(weights="random", random_seed=3, random_arch="tiny", device="cpu",
                   batch_size=2)
HOP = 320


@pytest.fixture(scope="module")
def codec():
    return load_codec(TINY)


def _wave(n: int, seed: int = 0, batch: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n,) if batch is None else (batch, n)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)


def test_constants_describe_the_tiny_model(codec):
    c = codec.constants()
    assert (c["sample_rate"], c["hop_length"], c["latent_dim"], c["n_codebooks"]) == (
        16000, HOP, 64, 4)
    assert c["frame_rate"] == pytest.approx(50.0)
    assert c["identity"]["kind"] == "random-init" and c["identity"]["seed"] == 3
    assert codec.is_random


@pytest.mark.parametrize("n", [HOP * 10, HOP * 10 + 1, HOP * 10 - 7])
def test_encode_pads_to_the_hop(codec, n):
    x = _wave(n)
    z = codec.encode(x)
    frames = -(-n // HOP)
    assert tuple(z.shape) == (1, 64, frames) and z.dtype == torch.float32
    padded = np.pad(x, (0, frames * HOP - n))
    torch.testing.assert_close(z, codec.encode(padded), rtol=0, atol=0)


def test_encode_accepts_batch_layouts(codec):
    x = _wave(HOP * 8, batch=3)
    z2 = codec.encode(x)
    z3 = codec.encode(x[:, None, :])
    assert tuple(z2.shape) == (3, 64, 8)
    torch.testing.assert_close(z2, z3, rtol=0, atol=0)
    with pytest.raises(ValueError, match="wave must be"):
        codec.encode(np.zeros((2, 2, 2, HOP), dtype=np.float32))


def test_encode_batched_matches_single_encodes(codec):
    x = _wave(HOP * 6, seed=1, batch=5)  # batch_size 2 → three forwards
    z = codec.encode_batched(x)
    assert z.shape == (5, 64, 6) and isinstance(z, np.ndarray)
    for i in range(5):
        np.testing.assert_allclose(z[i], codec.encode(x[i])[0].numpy(), rtol=1e-5, atol=1e-6)


def test_quantize_and_decode_shapes(codec):
    z = codec.encode(_wave(HOP * 12, batch=2))
    zq = codec.quantize(z)
    assert zq.shape == z.shape and not torch.equal(zq, z)
    y = codec.decode(zq)
    assert tuple(y.shape) == (2, 1, 12 * HOP)
    assert tuple(codec.decode(zq, length=12 * HOP - 5).shape) == (2, 1, 12 * HOP - 5)
    assert tuple(codec.decode(zq, length=12 * HOP + 9).shape) == (2, 1, 12 * HOP + 9)


def test_random_init_is_deterministic_per_seed(codec):
    x = _wave(HOP * 5, seed=2)
    same = load_codec(TINY)
    other = load_codec(CodecConfig(weights="random", random_seed=4, random_arch="tiny",
                                   device="cpu"))
    torch.testing.assert_close(codec.encode(x), same.encode(x), rtol=0, atol=0)
    assert not torch.allclose(codec.encode(x), other.encode(x))
    assert same.identity == codec.identity and other.identity != codec.identity


def test_release_file_written_by_dac_loads_and_encodes_identically(tmp_path, codec):
    path = save_random_release_file(tmp_path / "tiny_release.pth", arch="tiny", seed=3)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    assert {"state_dict", "metadata"} <= set(blob) and "kwargs" in blob["metadata"]
    loaded = load_codec(CodecConfig(weights=str(path), device="cpu"))
    assert not loaded.is_random
    assert loaded.identity["kind"] == "pretrained"
    assert loaded.identity["file"] == "tiny_release.pth"
    assert loaded.identity["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    x = _wave(HOP * 9, seed=5)
    torch.testing.assert_close(loaded.encode(x), codec.encode(x), rtol=0, atol=0)


def test_unreadable_weights_file_names_the_path(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CodecWeightsError, match="broken.pth"):
        load_codec(CodecConfig(weights=str(bad), device="cpu"))
    with pytest.raises(CodecWeightsError, match="not found"):
        load_codec(CodecConfig(weights=str(tmp_path / "missing.pth"), device="cpu"))


def test_offline_without_weights_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    import_dac()
    from dac import utils as dac_utils

    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(dac_utils, "download", offline)
    with pytest.raises(CodecWeightsError) as err:
        load_codec(CodecConfig(device="cpu"))
    message = str(err.value)
    assert str(default_weights_path()) in message and str(tmp_path) in message
    assert "weights_16khz_8kbps_0.0.5.pth" in message
    assert "https://" in message
    assert "--codec-weights" in message and "network is unreachable" in message


def test_inference_speed_ups_keep_encode_quantize_decode_equal(codec):
    """Folded weight norm and the in-place Snake give dac's own numbers (float rounding)."""
    from cleancodec.core.codec import _build_dac, prepare_for_inference, resolve_arch

    torch.manual_seed(TINY.random_seed)
    reference = _build_dac(resolve_arch("tiny")).eval()
    assert any(type(h).__name__ == "WeightNorm" for m in reference.modules()
               for h in m._forward_pre_hooks.values())
    x = torch.from_numpy(_wave(HOP * 25, seed=5, batch=2))[:, None]
    with torch.inference_mode():
        z_ref = reference.encoder(x)
        y_ref = reference.decoder(reference.quantizer(z_ref, n_quantizers=4)[0])
    z = codec.encode(x)
    y = codec.decode(codec.quantize(z))
    torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y[..., :y_ref.shape[-1]], y_ref, rtol=1e-4, atol=1e-5)
    assert prepare_for_inference(reference) > 0 and prepare_for_inference(reference) == 0
    with torch.enable_grad():  # with autograd on, the differentiable form is used
        x.requires_grad_(True)
        reference.encoder(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_importing_dac_shows_no_warnings():
    """dac's import-time warnings (weight_norm, torch.jit.script) are not the user's concern:
    with every warning an error, importing it through the codec module still succeeds."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-W", "error", "-c",
                           "from cleancodec.core.codec import import_dac; import_dac()"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
