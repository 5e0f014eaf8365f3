"""pipeline.build: the cache stage end to end on the tiny codec and the synthetic corpus.

Windows are 1 s here (50 latent frames) to keep the suite fast; the code path is the same as
for the default 3 s.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zarr
from click.testing import CliRunner

from cleancodec.core.codec import load_codec
from cleancodec.pipeline.build import (
    BuildError,
    CacheMismatchError,
    NoUsableInputError,
    build_cache,
)
from cleancodec.pipeline.corpus import DEFAULT_SPEAKER_PATTERNS, speaker_from_name
from cleancodec.pipeline.inputs import Inputs
from cleancodec.pipeline.manifest import latent_shape, load_manifest
from cleancodec.pipeline.mix import MixConfig
from cleancodec.pipeline.plan import make_plan
from cleancodec.pipeline.shards import META_FIELDS, sha256_file
from cleancodec.pipeline.windows import make_window
from cleancodec.trainer.data import open_split, read_split, read_window
from tests.helpers import BUILD_CODEC as CODEC
from tests.helpers import REPO, SR, split_arrays
from tests.helpers import build_small_cache as build
from tests.helpers import small_cache_cfg as small_cfg

# --- what a build writes ---------------------------------------------------------------------


def test_manifest_holds_every_constant_and_shard_checksum(zarr_cache):
    out, summary = zarr_cache
    m = load_manifest(out, require_complete=True)
    assert m["storage"] == "zarr" and m["dtype"] == "float16" and m["seed"] == 5
    assert m["codec"]["identity"]["kind"] == "random-init" and m["random_init"]
    assert m["notice"] and "RANDOM-INIT" in m["notice"]
    assert (m["codec"]["sample_rate"], m["codec"]["hop_length"]) == (SR, 320)
    assert m["window"] == {"seconds": 1.0, "samples": SR, "frames": 50}
    assert latent_shape(m) == (64, 50)
    assert m["mix"]["snr_min_db"] == -5.0 and m["config"]["windows_per_shard"] == 2
    packages = {"torch", "zarr", "numcodecs", "webdataset", "descript-audio-codec"}
    assert packages <= set(m["versions"])
    assert m["versions"]["zarr"].startswith("3.")
    assert m["counts"]["windows"] == {"train": 6, "val": 2} and m["counts"]["rejected"] == 0
    assert m["counts"]["bytes"] > 0 and m["counts"]["audio_hours"] == pytest.approx(8 / 3600)
    assert len(m["sources"]["clean"]) == 8 and len(m["sources"]["noise"]) == 4
    for split, n_shards in (("train", 3), ("val", 1)):
        info = m["splits"][split]
        assert info["path"] == f"{split}.zarr" and info["windows_per_shard"] == 2
        assert [s["index"] for s in info["shards"]] == list(range(n_shards))
        for shard in info["shards"]:
            assert shard["status"] == "done" and shard["windows"] == 2
            for f in shard["files"]:
                assert sha256_file(out / f["path"]) == f["sha256"]
    attrs = zarr.open_group(str(out / "train.zarr"), mode="r").attrs["manifest"]
    assert attrs["complete"] and attrs["splits"]["train"]["windows"] == 6
    assert summary.complete and summary.windows == {"train": 6, "val": 2}
    assert summary.bytes == m["counts"]["bytes"] and summary.bytes_per_audio_hour > 0
    assert summary.shards_built == 4 and summary.shards_reused == 0
    assert not (out / ".tmp").exists() or not any((out / ".tmp").iterdir())
    assert (out / "rejected.tsv").read_text().splitlines() == ["path\trole\treason"]
    assert "RANDOM-INIT" in summary.text()


def test_stored_windows_are_the_plan_encoded(zarr_cache, corpus):
    out, _ = zarr_cache
    m = load_manifest(out)
    record = json.loads((out / "corpus.json").read_text())
    inputs = Inputs(corpus.clean_dir.absolute(), corpus.noise_dir.absolute(), None, "dirs")
    plan = make_plan(small_cfg(), record, inputs, m["codec"])
    codec = load_codec(CODEC)
    reader = open_split(out, m, "train")
    for k in (0, 5):
        window = make_window(plan, "train", k)
        clean, noisy, meta = read_window(reader, k)
        expect = codec.encode_batched(np.stack([window.clean, window.noisy])).astype(np.float16)
        np.testing.assert_array_equal(clean, expect[0])
        np.testing.assert_array_equal(noisy, expect[1])
        assert not np.array_equal(clean, noisy)
        for name in META_FIELDS:
            assert meta[name] == pytest.approx(window.meta[name]), name
        assert -5.0 <= meta["snr_db"] <= 20.0 and -35.0 <= meta["level_dbfs"] <= -15.0
        source = plan.clean[meta["clean_source"]]
        assert 0 <= meta["clean_offset"] <= source.length - SR
        assert meta["clean_path"] == m["sources"]["clean"][meta["clean_source"]]


def test_splits_are_speaker_disjoint(zarr_cache):
    out, _ = zarr_cache
    m = load_manifest(out)
    speakers = {}
    for split in ("train", "val"):
        _, _, metas = read_split(open_split(out, m, split))
        speakers[split] = {speaker_from_name(mm["clean_source"], DEFAULT_SPEAKER_PATTERNS)
                           for mm in metas}
    assert speakers["train"] and speakers["val"] and not (speakers["train"] & speakers["val"])
    assert m["splits"]["val"]["speakers"] == 1 and m["splits"]["train"]["speakers"] == 3


def test_same_seed_is_bit_identical_and_another_seed_is_not(zarr_cache, corpus, tmp_path):
    out, _ = zarr_cache
    build(corpus, tmp_path / "again")
    ref, again = load_manifest(out), load_manifest(tmp_path / "again")
    for split in ("train", "val"):
        assert ([s["sha256"] for s in ref["splits"][split]["shards"]]
                == [s["sha256"] for s in again["splits"][split]["shards"]])
        np.testing.assert_array_equal(split_arrays(out, split)[1],
                                      split_arrays(tmp_path / "again", split)[1])
    build(corpus, tmp_path / "other", small_cfg(seed=6))
    assert not np.array_equal(split_arrays(out)[1], split_arrays(tmp_path / "other")[1])


def test_webdataset_storage_holds_the_same_windows(zarr_cache, corpus, tmp_path):
    out, _ = zarr_cache
    summary = build(corpus, tmp_path / "wds", small_cfg(storage="webdataset"))
    m = load_manifest(tmp_path / "wds", require_complete=True)
    assert m["splits"]["train"]["pattern"] == "train-%06d.tar"
    assert sorted(p.name for p in (tmp_path / "wds").glob("*.tar")) == [
        "train-000000.tar", "train-000001.tar", "train-000002.tar", "val-000000.tar"]
    assert m["splits"]["train"]["shards"][1]["file"] == "train-000001.tar"
    for split in ("train", "val"):
        zc, zn, zmeta = split_arrays(out, split)
        wc, wn, wmeta = split_arrays(tmp_path / "wds", split)
        np.testing.assert_array_equal(zc, wc)
        np.testing.assert_array_equal(zn, wn)
        assert [x["clean_source"] for x in zmeta] == [x["clean_source"] for x in wmeta]
        assert all(isinstance(x["noise_source"], str) for x in wmeta)
    assert summary.bytes_per_audio_hour > 0


# --- resume, refusal ------------------------------------------------------------------------


def test_rerun_reuses_done_shards_and_rebuilds_damaged_ones(zarr_cache, corpus, tmp_path):
    src, _ = zarr_cache
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    reference = split_arrays(src)
    again = build(corpus, out)
    assert again.shards_built == 0 and again.shards_reused == 4 and again.complete
    (out / "train.zarr" / "noisy" / "c" / "1" / "0" / "0").unlink()
    repaired = build(corpus, out)
    assert repaired.shards_built == 1
    np.testing.assert_array_equal(split_arrays(out)[1], reference[1])
    target = out / "train.zarr" / "clean" / "c" / "2" / "0" / "0"
    blob = bytearray(target.read_bytes())
    blob[-1] ^= 0xFF
    target.write_bytes(bytes(blob))  # same size: only --verify notices
    assert build(corpus, out).shards_built == 0
    assert build(corpus, out, verify=True).shards_built == 1
    np.testing.assert_array_equal(split_arrays(out)[0], reference[0])


def test_cache_of_another_codec_or_config_is_refused_unless_overwrite(zarr_cache, corpus,
                                                                     tmp_path):
    src, _ = zarr_cache
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    with pytest.raises(CacheMismatchError, match="config seed: cache 5, this run 6"):
        build(corpus, out, small_cfg(seed=6))
    with pytest.raises(CacheMismatchError, match="codec: cache has random-init DAC"):
        build(corpus, out, codec=dataclasses.replace(CODEC, random_seed=1))
    assert load_manifest(out)["seed"] == 5  # nothing was touched
    summary = build(corpus, out, small_cfg(seed=6), overwrite=True)
    assert summary.complete and summary.shards_built == 4 and load_manifest(out)["seed"] == 6
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.pdf").write_bytes(b"%PDF")
    with pytest.raises(BuildError, match="thesis.pdf"):
        build(corpus, foreign)
    assert (foreign / "thesis.pdf").read_bytes() == b"%PDF"


# --- inputs ---------------------------------------------------------------------------------


def test_bad_inputs_are_skipped_listed_and_the_build_goes_on(corpus, tmp_path):
    clean = tmp_path / "clean"
    shutil.copytree(corpus.clean_dir, clean)
    t = np.arange(int(3.5 * 44100)) / 44100
    voiced = 0.2 * np.sin(2 * np.pi * 140 * t) * (np.sin(2 * np.pi * 1.5 * t) > -0.5)
    (clean / "reader_0009").mkdir()
    sf.write(clean / "reader_0009" / "stereo_44k_reader_0009.flac",
             np.stack([voiced, voiced], 1).astype(np.float32), 44100)
    good = sorted(clean.rglob("*.wav"))[0].read_bytes()
    bad = clean / "bad"
    bad.mkdir()
    (bad / "truncated.wav").write_bytes(good[: len(good) // 3])
    (bad / "text.wav").write_text("not audio")
    (bad / "header.wav").write_bytes(good[:30])
    sf.write(bad / "empty.wav", np.zeros(0, np.float32), SR)
    sf.write(bad / "silent.wav", np.zeros(SR, np.float32), SR)
    nan = np.full(SR, 0.1, np.float32)
    nan[5] = np.nan
    sf.write(bad / "nan.wav", nan, SR, subtype="FLOAT")
    os.symlink(bad / "gone.wav", bad / "dangling.wav")
    summary = build_cache(small_cfg(val_fraction=0.2), CODEC, clean, corpus.noise_dir,
                          out_dir=tmp_path / "out", progress=False)
    assert summary.complete
    rows = (tmp_path / "out" / "rejected.tsv").read_text().splitlines()
    assert rows[0] == "path\trole\treason" and len(rows) == 8 == len(summary.rejected) + 1
    reasons = {Path(r.split("\t")[0]).name: r.split("\t")[2] for r in rows[1:]}
    assert set(reasons) == {"truncated.wav", "text.wav", "header.wav", "empty.wav",
                            "silent.wav", "nan.wav", "dangling.wav"}
    assert "truncated" in reasons["truncated.wav"] and "NaN" in reasons["nan.wav"]
    assert "all-silent" in reasons["silent.wav"] and "empty" in reasons["empty.wav"]
    assert "rejected inputs: 7" in summary.text()
    m = load_manifest(tmp_path / "out")
    assert "reader_0009/stereo_44k_reader_0009.flac" in m["sources"]["clean"]
    assert m["counts"]["rejected"] == 7


def test_no_usable_input_is_an_error(corpus, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.wav").write_text("not audio")
    with pytest.raises(NoUsableInputError, match="no usable clean speech"):
        build_cache(small_cfg(), CODEC, bad, corpus.noise_dir, out_dir=tmp_path / "o1",
                    progress=False)
    with pytest.raises(NoUsableInputError, match="no usable noise"):
        build_cache(small_cfg(), CODEC, corpus.clean_dir, bad, out_dir=tmp_path / "o2",
                    progress=False)
    rows = (tmp_path / "o2" / "rejected.tsv").read_text().splitlines()[1:]
    assert len(rows) == 1 and rows[0].startswith(f"{bad / 'a.wav'}\tnoise\tcannot decode")


def test_reverb_uses_the_rir_folder(corpus, tmp_path):
    rirs = tmp_path / "rir"
    rirs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        tail = rng.standard_normal(4000) * np.exp(-np.arange(4000) / (800 + 400 * i))
        tail[:50] = 0
        tail[50] = 1.0
        sf.write(rirs / f"room{i}.wav", tail.astype(np.float32), SR, subtype="FLOAT")
    cfg = small_cfg(train_windows=4, val_windows=0,
                    mix=MixConfig(window_seconds=1.0, reverb_prob=1.0))
    build_cache(cfg, CODEC, corpus.clean_dir, corpus.noise_dir, rirs, tmp_path / "out",
                progress=False)
    m = load_manifest(tmp_path / "out")
    _, _, metas = read_split(open_split(tmp_path / "out", m, "train"))
    assert all(x["reverb"] == 1 for x in metas)
    assert {x["rir_source"] for x in metas} <= {"room0.wav", "room1.wav"}
    assert m["sources"]["rir"] == ["room0.wav", "room1.wav"] and m["splits"]["val"]["windows"] == 0


def test_window_counts_from_hours_and_coverage():
    constants = {"sample_rate": SR, "hop_length": 320, "latent_dim": 64}
    record = {"files": {
        "clean": [{"rel": f"s{i}.wav", "length": 10 * SR, "reason": None, "speaker": str(i),
                   "split": "val" if i == 0 else "train"} for i in range(4)],
        "noise": [{"rel": "n.wav", "length": SR, "reason": None, "speaker": None,
                   "split": "shared"}], "rir": []}}
    inputs = Inputs(Path("/c"), Path("/n"), None, "dirs")
    plan = make_plan(small_cfg(train_windows=None, val_windows=None), record, inputs, constants)
    assert (plan.splits["train"].windows, plan.splits["val"].windows) == (30, 10)
    plan = make_plan(small_cfg(train_windows=None, val_windows=None, coverage=2.0,
                               train_hours=0.01), record, inputs, constants)
    assert (plan.splits["train"].windows, plan.splits["val"].windows) == (36, 20)
    assert plan.noise_shared and list(plan.splits["val"].noise) == [0]


# --- command line ---------------------------------------------------------------------------


def test_cli_builds_the_tiny_profile_offline(tmp_path, monkeypatch):
    from cleancodec.cli import main

    monkeypatch.chdir(tmp_path)
    profile = tmp_path / "smoke.yaml"
    profile.write_text(f"base: {REPO / 'conf' / 'tiny.yaml'}\ncache:\n  train_windows: 4\n"
                       "  val_windows: 2\n  windows_per_shard: 2\n  mix: {window_seconds: 1.0}\n"
                       "codec:\n  num_threads: 1\n")
    result = CliRunner().invoke(main, ["cache", "--conf", str(profile), "--out", "cache",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    assert "train 4 windows, val 2 windows" in result.output and "RANDOM-INIT" in result.output
    assert (tmp_path / "data" / "tiny_corpus" / "synth.json").is_file()
    manifest = load_manifest(tmp_path / "cache", require_complete=True)
    assert manifest["inputs"]["corpus"] == "synthetic"
    missing = CliRunner().invoke(main, ["cache", "--conf", str(REPO / "conf" / "cache.yaml"),
                                        "--codec", "random", "--out", "c2", "--quiet"])
    assert missing.exit_code != 0 and "make demo-data" in missing.output
