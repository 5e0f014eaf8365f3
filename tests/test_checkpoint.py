"""trainer.checkpoint: atomic writes, weights_only loading, RNG round trip, load_denoiser."""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from cleancodec.trainer.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    capture_rng,
    load_checkpoint,
    load_denoiser,
    remove_stale_temps,
    restore_rng,
    save_atomic,
)
from cleancodec.trainer.models import Denoiser


def _checkpoint(step: int = 7) -> dict:
    torch.manual_seed(step)
    model = Denoiser(latent_dim=6, width=8, depth=1)
    torch.nn.init.normal_(model.head.weight, std=0.1)
    model.set_latent_stats(torch.randn(6), torch.rand(6) + 0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.0, 0.9))
    model(torch.randn(2, 6, 5)).sum().backward()
    opt.step()
    return {"format_version": FORMAT_VERSION, "model_args": dict(model.model_args),
            "denoiser": model.state_dict(), "discriminator": {}, "opt_g": opt.state_dict(),
            "opt_d": None, "step": step, "rng": capture_rng(), "config": {"seed": 0},
            "codec_identity": {"kind": "random-init", "seed": 0}, "cache_manifest_digest": "ab",
            "val": {"val/gain": 0.9}}


def test_full_checkpoint_loads_with_weights_only(tmp_path):
    ckpt = _checkpoint()
    path = save_atomic(ckpt, tmp_path / "latest.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 7 and raw["opt_g"]["param_groups"][0]["betas"] == (0.0, 0.9)
    for key, value in ckpt["denoiser"].items():
        assert torch.equal(raw["denoiser"][key], value)


def test_failed_save_keeps_the_previous_file_and_no_temp(tmp_path):
    path = save_atomic(_checkpoint(step=1), tmp_path / "latest.pt")
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a lambda cannot be pickled
        save_atomic({"format_version": FORMAT_VERSION, "bad": lambda: None}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_truncated_or_foreign_files_are_named_in_the_error(tmp_path):
    path = save_atomic(_checkpoint(), tmp_path / "latest.pt")
    torn = tmp_path / "torn.pt"
    torn.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="torn.pt: unreadable checkpoint"):
        load_checkpoint(torn)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format_version": 42}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a cleancodec checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_round_trip():
    state = capture_rng()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_rng_state_survives_weights_only_save(tmp_path):
    path = save_atomic({"format_version": FORMAT_VERSION, "rng": capture_rng()}, tmp_path / "r.pt")
    expected = torch.rand(4)
    restore_rng(torch.load(path, weights_only=True)["rng"])
    assert torch.equal(torch.rand(4), expected)


def test_load_denoiser_rebuilds_the_model_from_the_checkpoint_alone(tmp_path):
    ckpt = _checkpoint()
    path = save_atomic(ckpt, tmp_path / "best.pt")
    model, info = load_denoiser(path)
    assert not model.training
    assert info["model_args"] == ckpt["model_args"] and info["step"] == 7
    assert info["codec_identity"] == {"kind": "random-init", "seed": 0}
    assert "denoiser" not in info and "opt_g" not in info
    reference = Denoiser(**ckpt["model_args"])
    reference.load_state_dict(ckpt["denoiser"])
    z = torch.randn(2, 6, 9)
    with torch.no_grad():
        torch.testing.assert_close(model(z), reference(z))
        assert not torch.equal(model(z), z)


def test_load_denoiser_rejects_mismatched_weights(tmp_path):
    ckpt = _checkpoint()
    ckpt["model_args"]["width"] = 16
    path = save_atomic(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt: denoiser does not match"):
        load_denoiser(path)


def test_remove_stale_temps(tmp_path):
    (tmp_path / ".latest.pt.abc.tmp").write_bytes(b"x")
    keep = save_atomic(_checkpoint(), tmp_path / "latest.pt")
    removed = remove_stale_temps(tmp_path)
    assert [p.name for p in removed] == [".latest.pt.abc.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == [keep.name]
