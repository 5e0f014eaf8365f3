"""pipeline.pairing and premixed caches (``cleancodec cache --clean DIR --noisy DIR``): clean /
noisy pairs in the seed's, VoiceBank+DEMAND's and the DNS synthesiser's layouts, paired, checked,
cut at one offset, levelled with one gain, encoded by the tiny codec and trained on.

Pairs are synthetic: speech-like clean clips plus noise at a known SNR, 1 s windows.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cleancodec.core.audio import read_segment
from cleancodec.core.codec import load_codec
from cleancodec.pipeline.build import build_cache
from cleancodec.pipeline.corpus import CorpusError
from cleancodec.pipeline.inputs import read_corpus_record, resolve_inputs
from cleancodec.pipeline.manifest import load_manifest
from cleancodec.pipeline.mix import MixConfig, level_premixed, rms_dbfs, snr_db
from cleancodec.pipeline.pairing import choose_pairing, common_variant_count, pair_by
from cleancodec.pipeline.plan import make_plan
from cleancodec.pipeline.windows import make_premixed_window
from cleancodec.trainer.data import open_split, read_split
from cleancodec.trainer.loop import fit
from tests.helpers import BUILD_CODEC as CODEC
from tests.helpers import REPO, SR, small_cache_cfg, speechlike, tiny_cfg

VB_SR = 48000           # VoiceBank+DEMAND's rate
CLIP_S = 2.5            # seconds per synthetic clip
HOP = 320               # the codec hop at 16 kHz: largest length difference of a kept pair
PAIR_SNR_DB = (0.0, 5.0, 10.0, 15.0)
SNR_TOL_DB = 0.05       # float32 rounding and resampling of the two sides



def _pair(seed: int, snr: float, sr: int = SR, seconds: float = CLIP_S):
    """``(clean, noisy)`` float32 ``[T]`` at ``sr``: noisy = clean + white noise at ``snr`` dB."""
    rng = np.random.default_rng(seed)
    clean = speechlike(seconds, seed, sr) * 0.5
    noise = rng.standard_normal(len(clean))
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr / 10))
    return clean, (clean + noise).astype(np.float32)


def _write(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype="FLOAT")
    return path


def _voicebank(root: Path) -> tuple[Path, Path]:
    """``clean_trainset_28spk_wav`` / ``noisy_trainset_28spk_wav``: 4 speakers × 2 clips, 48 kHz."""
    clean, noisy = root / "clean_trainset_28spk_wav", root / "noisy_trainset_28spk_wav"
    for i, spk in enumerate(("p226", "p227", "p228", "p229")):
        for j in range(2):
            c, n = _pair(10 * i + j, PAIR_SNR_DB[(i + j) % 4], VB_SR)
            _write(clean / f"{spk}_{j + 1:03d}.wav", c, VB_SR)
            _write(noisy / f"{spk}_{j + 1:03d}.wav", n, VB_SR)
    return clean, noisy


def _dns_noisy_name(fileid: int, reader: int, snr: int) -> str:
    return (f"book_{1000 + fileid:05d}_chp_0001_reader_{reader:05d}_{fileid % 3}_snr{snr}"
            f"_tl-22_fileid_{fileid}.wav")


def _dns(root: Path, variants: int = 2) -> tuple[Path, Path]:
    """DNS synthesiser output: ``clean/clean_fileid_N.wav`` and ``variants`` noisy mixtures of each
    (``noisy/<v>/book_…_reader_RRRRR_…_fileid_N.wav``); readers 101..104, two files each."""
    clean, noisy = root / "clean", root / "noisy"
    for n in range(8):
        reader = 101 + n // 2
        c, _ = _pair(n, 0.0)
        _write(clean / f"clean_fileid_{n}.wav", c)
        for v in range(variants):
            snr = int(PAIR_SNR_DB[(n + v) % 4])
            _, x = _pair(n, snr)
            _write(noisy / f"v{v}" / _dns_noisy_name(n, reader, snr), x)
    return clean, noisy


def _cfg(**changes):
    return small_cache_cfg(**changes)


def _build(clean: Path, noisy: Path, out: Path, cfg=None, rir: Path | None = None, **kw):
    return build_cache(cfg or _cfg(), CODEC, clean, None, rir, out, progress=False,
                       noisy_dir=noisy, **kw)


def _plan(cache: Path, cfg, clean: Path, noisy: Path, rir: Path | None = None):
    inputs = resolve_inputs(cfg, clean, None, rir, noisy_dir=noisy)
    return make_plan(cfg, read_corpus_record(cache), inputs, load_codec(CODEC).constants())


def _rejected(cache: Path) -> dict[str, tuple[str, str]]:
    rows = (cache / "rejected.tsv").read_text().splitlines()
    assert rows[0] == "path\trole\treason"
    return {Path(r.split("\t")[0]).name: (r.split("\t")[1], r.split("\t")[2]) for r in rows[1:]}


# --- pairing rules (pure) ---------------------------------------------------------------------


def test_pairing_rules_pick_the_layout_and_record_every_candidate():
    same = ["p226_001.wav", "p226_002.wav"]
    by_path = choose_pairing(same, same)
    assert by_path.rule == "path" and by_path.partners == {r: [r] for r in same}
    assert by_path.candidates == {"path": 2, "name": 2, "fileid": 0}
    flat = choose_pairing(["a/x.wav", "b/y.wav"], ["x.flac", "y.flac", "z.flac"])
    assert flat.rule == "name" and flat.partners == {"a/x.wav": ["x.flac"],
                                                     "b/y.wav": ["y.flac"]}
    assert flat.unpaired_noisy == ["z.flac"]
    dns_noisy = [_dns_noisy_name(n, 101, 5) for n in (1, 2)] + ["noise_only.wav"]
    dns = choose_pairing(["clean_fileid_1.wav", "clean_fileid_2.wav", "clean_fileid_3.wav"],
                         dns_noisy)
    assert dns.rule == "fileid" and dns.partners["clean_fileid_2.wav"] == [dns_noisy[1]]
    assert dns.unpaired_clean == ["clean_fileid_3.wav"]
    assert dns.unpaired_noisy == ["noise_only.wav"]
    twice = pair_by("name", ["a/x.wav", "b/x.wav", "y.wav"], ["x.wav", "y.wav", "n/y.wav"])
    assert set(twice.ambiguous) == {"a/x.wav", "b/x.wav", "x.wav"}
    assert "2 clean files share the name key 'x'" in twice.ambiguous["x.wav"]
    assert twice.partners == {"y.wav": ["n/y.wav", "y.wav"]}  # two variants of one clean file
    assert common_variant_count([2, 2, 1, 3]) == 2 and common_variant_count([1, 2]) == 1
    assert common_variant_count([]) == 0


def test_level_premixed_keeps_the_pair_snr_with_one_gain():
    clean, noisy = _pair(3, 7.0)
    noisy2 = clean + 2.0 * (noisy - clean)  # the same clean with twice the noise: 6 dB less
    cfg = MixConfig()
    out = level_premixed(clean, [noisy, noisy2], -30.0, [None, None], cfg)
    gain = out[0].gain
    assert rms_dbfs(out[0].noisy) == pytest.approx(-30.0, abs=1e-3)
    np.testing.assert_allclose(out[0].clean, clean * gain, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out[1].noisy, noisy2 * gain, rtol=1e-5, atol=1e-7)
    assert out[0].snr_db == pytest.approx(7.0, abs=1e-3)
    assert out[1].snr_db == pytest.approx(7.0 - 20 * np.log10(2.0), abs=1e-3)
    loud = level_premixed(clean, [noisy], 0.0, [None], cfg)[0]  # would clip: gain lowered
    assert loud.clipped and np.max(np.abs(loud.noisy)) == pytest.approx(cfg.clip_peak, rel=1e-5)
    assert snr_db(loud.clean, loud.noisy - loud.clean) == pytest.approx(7.0, abs=1e-3)


# --- VoiceBank+DEMAND (48 kHz, same names): pairs, speakers, SNR, storages --------------------


def test_voicebank_cache_keeps_each_pair_snr_and_splits_by_speaker(tmp_path):
    clean, noisy = _voicebank(tmp_path / "vb")
    out = tmp_path / "cache"
    cfg = _cfg()
    summary = _build(clean, noisy, out, cfg)
    assert summary.complete and not summary.rejected
    assert "premixed pairs 8 (paired by path, K = 1 noisy per clean)" in summary.text()
    m = load_manifest(out)
    assert m["premixed"] == {"rule": "path", "candidates": {"path": 8, "name": 8, "fileid": 0},
                             "noisy_per_clean": 1, "pairs": 8,
                             "unpaired": {"clean": 0, "noisy": 0}, "rejected": 0}
    assert m["noisy_per_clean"] == 1 and m["inputs"]["noisy"] == str(noisy)
    assert m["inputs"]["noise"] is None and m["sources"]["noise"] == m["sources"]["clean"]
    record = read_corpus_record(out)
    speakers = {split: {e["speaker"] for e in record["files"]["clean"] if e["split"] == split}
                for split in ("train", "val")}
    assert speakers["val"] and speakers["train"] and not speakers["val"] & speakers["train"]
    assert speakers["val"] | speakers["train"] == {"p226", "p227", "p228", "p229"}
    for e in record["files"]["noisy"]:  # each noisy file goes where its clean file goes
        assert e["split"] == next(c["split"] for c in record["files"]["clean"]
                                  if c["rel"] == e["rel"])
    # the windows: cut at one offset from both sides, one gain, the pair's SNR kept
    plan = _plan(out, cfg, clean, noisy)
    _, _, metas = read_split(open_split(out, m, "train"))
    for k, stored in enumerate(metas):
        w = make_premixed_window(plan, "train", k)
        assert w.meta["clean_offset"] == w.meta["noise_offset"] == stored["clean_offset"]
        src_c = read_segment(plan.clean[w.meta["clean_source"]].path, w.meta["clean_offset"],
                             plan.window_samples, SR)
        src_n = read_segment(plan.noise[w.meta["noise_source"]].path, w.meta["clean_offset"],
                             plan.window_samples, SR)
        pair_snr = snr_db(src_c, src_n - src_c)
        assert snr_db(w.clean, w.noisy - w.clean) == pytest.approx(pair_snr, abs=SNR_TOL_DB)
        assert stored["snr_db"] == pytest.approx(pair_snr, abs=SNR_TOL_DB)
        gain = float(np.dot(w.clean, src_c) / np.dot(src_c, src_c))
        np.testing.assert_allclose(w.noisy, src_n * gain, atol=1e-5)  # the same gain
        assert cfg.mix.level_min_dbfs <= stored["level_dbfs"] <= cfg.mix.level_max_dbfs
        if not stored["clipped"]:
            assert rms_dbfs(w.noisy) == pytest.approx(stored["level_dbfs"], abs=1e-2)
        assert stored["reverb"] == 0 and stored["rir_source"] is None
        assert stored["clean_source"] == stored["noise_source"]  # same relative name


def test_webdataset_premixed_cache_holds_the_zarr_windows(tmp_path):
    clean, noisy = _voicebank(tmp_path / "vb")
    _build(clean, noisy, tmp_path / "zarr")
    _build(clean, noisy, tmp_path / "wds", _cfg(storage="webdataset"))
    for split in ("train", "val"):
        zc, zn, zm = read_split(open_split(tmp_path / "zarr", load_manifest(tmp_path / "zarr"),
                                           split))
        wc, wn, wm = read_split(open_split(tmp_path / "wds", load_manifest(tmp_path / "wds"),
                                           split))
        np.testing.assert_array_equal(zc, wc)
        np.testing.assert_array_equal(zn, wn)
        assert [x["noise_source"] for x in zm] == [x["noise_source"] for x in wm]
    assert load_manifest(tmp_path / "wds")["premixed"]["rule"] == "path"


# --- DNS synthesiser output: fileid pairing, K variants, speakers from noisy names, training --


def test_dns_output_pairs_by_fileid_with_k_variants_and_trains(tmp_path):
    clean, noisy = _dns(tmp_path / "dns", variants=2)
    # clean_fileid_7 loses one of its two noisy files: fewer than K, so it is left out
    (noisy / "v1" / _dns_noisy_name(7, 104, int(PAIR_SNR_DB[(7 + 1) % 4]))).unlink()
    out = tmp_path / "cache"
    summary = _build(clean, noisy, out, _cfg(storage="webdataset"))
    m = load_manifest(out)
    assert m["premixed"]["rule"] == "fileid" and m["premixed"]["noisy_per_clean"] == 2
    assert m["noisy_per_clean"] == 2 and m["premixed"]["pairs"] == 7
    rejected = _rejected(out)
    assert rejected["clean_fileid_7.wav"][0] == "clean"
    assert "only 1 usable noisy file(s)" in rejected["clean_fileid_7.wav"][1]
    assert "its clean file clean_fileid_7.wav was rejected" in rejected[
        _dns_noisy_name(7, 104, int(PAIR_SNR_DB[7 % 4]))][1]
    assert len(summary.rejected) == 2 == m["premixed"]["rejected"]
    record = read_corpus_record(out)
    readers = {e["split"]: set() for e in record["files"]["clean"] if e["split"]}
    for e in record["files"]["clean"]:
        if e["split"]:
            readers[e["split"]].add(e["speaker"])
    assert set().union(*readers.values()) <= {"00101", "00102", "00103", "00104"}
    assert readers["val"] and not readers["val"] & readers["train"]
    _, noisy_lat, metas = read_split(open_split(out, m, "train"))
    assert len(noisy_lat) == 2 * m["splits"]["train"]["windows"]
    for a, b in zip(metas[0::2], metas[1::2]):  # a window's two variants: same clean, same cut
        assert a["clean_source"] == b["clean_source"]
        assert a["clean_offset"] == b["clean_offset"]
        assert a["noise_source"].split("/")[0] == "v0" and b["noise_source"].split("/")[0] == "v1"
        assert abs(a["snr_db"] - b["snr_db"]) > 1.0
    train_cfg = tiny_cfg(steps=2, log_every=1, val_every=2, checkpoint_every=2)
    train_cfg = dataclasses.replace(train_cfg, data=dataclasses.replace(
        train_cfg.data, batch_size=4, stats_windows=8, val_batch_size=4))
    result = fit(train_cfg, out, tmp_path / "run")
    assert result["step"] == 2 and np.isfinite(result["val/latent_l1"])


# --- the seed's layout: every bad case listed, the build goes on; reverb; resume --------------


def _seed_layout(root: Path) -> tuple[Path, Path, Path]:
    """``root/clean``, ``root/noisy``, ``root/rir``: 4 good pairs and one of each bad case."""
    clean, noisy, rir = root / "clean", root / "noisy", root / "rir"
    for i in range(4):
        c, n = _pair(i, PAIR_SNR_DB[i])
        _write(clean / f"utt{i}.wav", c)
        _write(noisy / f"utt{i}.wav", n)
    c, n = _pair(5, 5.0)
    _write(clean / "trimmed.wav", c)
    _write(noisy / "trimmed.wav", n[: len(n) - HOP // 2])  # within one hop: kept, trimmed
    _write(clean / "longer.wav", c)
    _write(noisy / "longer.wav", n[: len(n) - 2 * HOP])    # more than one hop apart
    _write(clean / "stereo.wav", c)
    _write(noisy / "stereo.wav", np.stack([n, n], 1))       # channel counts differ
    _write(clean / "only_clean.wav", c)                     # unpaired (clean side)
    _write(noisy / "only_noisy.wav", n)                     # unpaired (noisy side)
    _write(clean / "bad_noisy.wav", c)
    (noisy / "bad_noisy.wav").write_text("not audio")      # unreadable noisy side
    _write(clean / "silent.wav", np.zeros(SR, np.float32))  # all-silent clean side
    _write(noisy / "silent.wav", n)
    _write(clean / "empty.wav", c)
    _write(noisy / "empty.wav", np.zeros(0, np.float32))   # empty noisy side
    _write(clean / "short.wav", c)
    _write(noisy / "short.wav", np.full(2, 0.5, np.float32), VB_SR)  # < 1 sample at 16 kHz
    rng = np.random.default_rng(0)
    tail = rng.standard_normal(3000) * np.exp(-np.arange(3000) / 600)
    tail[:40], tail[40] = 0.0, 1.0
    _write(rir / "room.wav", tail.astype(np.float32))
    return clean, noisy, rir


def test_seed_layout_lists_every_bad_case_and_keeps_the_rest(tmp_path):
    clean, noisy, rir = _seed_layout(tmp_path / "seed")
    out = tmp_path / "cache"
    cfg = _cfg(train_windows=4, val_windows=2,
               mix=MixConfig(window_seconds=1.0, reverb_prob=1.0))
    summary = _build(clean, noisy, out, cfg, rir)
    assert summary.complete
    r = _rejected(out)
    expected = {
        "longer.wav": ("noisy", "length differs from its clean file longer.wav by 640 samples"),
        "stereo.wav": ("noisy", "channel count differs from its clean file stereo.wav "
                                "(clean 1, noisy 2)"),
        "only_clean.wav": ("clean", "unpaired: no noisy file matches it (pairing rule: path)"),
        "only_noisy.wav": ("noisy", "unpaired: no clean file matches it (pairing rule: path)"),
        "bad_noisy.wav": ("noisy", "cannot decode as audio"),
        "silent.wav": ("clean", "all-silent"),
        "empty.wav": ("noisy", "empty (0 samples)"),
        "short.wav": ("noisy", "too short to resample"),
    }
    rows = (out / "rejected.tsv").read_text().splitlines()[1:]
    by_role = {(Path(x.split("\t")[0]).name, x.split("\t")[1]): x.split("\t")[2] for x in rows}
    for name, (role, reason) in expected.items():
        assert reason in by_role[(name, role)], (name, by_role.get((name, role)))
    # the partner of each bad file is listed too, so nothing is silently dropped
    for name in ("longer.wav", "stereo.wav", "bad_noisy.wav", "empty.wav", "short.wav"):
        assert by_role[(name, "clean")] == "no usable noisy file (see its noisy files' reasons)"
    assert by_role[("silent.wav", "noisy")] == "its clean file silent.wav was rejected"
    assert set(r) == set(expected) and len(rows) == 14 == len(summary.rejected)
    m = load_manifest(out)
    assert m["premixed"]["pairs"] == 5 and m["premixed"]["rejected"] == 14
    assert m["premixed"]["unpaired"] == {"clean": 1, "noisy": 1}
    assert m["counts"]["rejected"] == 14
    assert sorted(m["sources"]["clean"]) == ["trimmed.wav"] + [f"utt{i}.wav" for i in range(4)]
    record = read_corpus_record(out)
    trimmed = next(e for e in record["files"]["clean"] if e["rel"] == "trimmed.wav")
    assert trimmed["pair_length"] == trimmed["length"] - HOP // 2
    # reverb on the noisy side only: the target is the dry clean at the common gain
    plan = _plan(out, cfg, clean, noisy, rir)
    _, _, metas = read_split(open_split(out, m, "train"))
    assert all(x["reverb"] == 1 and x["rir_source"] == "room.wav" for x in metas)
    w = make_premixed_window(plan, "train", 0)
    src_c = read_segment(plan.clean[w.meta["clean_source"]].path, w.meta["clean_offset"],
                         plan.window_samples, SR)
    gain = float(np.dot(w.clean, src_c) / np.dot(src_c, src_c))
    np.testing.assert_allclose(w.clean, src_c * gain, atol=1e-6)
    src_n = read_segment(plan.noise[w.meta["noise_source"]].path, w.meta["clean_offset"],
                         plan.window_samples, SR)
    assert not np.allclose(w.noisy, src_n * gain, atol=1e-3)  # convolved, same length
    assert len(w.noisy) == plan.window_samples


def test_trimmed_pair_windows_are_zero_past_the_shorter_side(tmp_path):
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    c, n = _pair(1, 5.0, seconds=1.2)
    _write(clean / "a.wav", c)
    _write(noisy / "a.wav", n[: len(n) - 100])
    cfg = _cfg(train_windows=6, val_windows=0, val_fraction=0.0)
    _build(clean, noisy, tmp_path / "cache", cfg)
    plan = _plan(tmp_path / "cache", cfg, clean, noisy)
    assert plan.clean[0].length == len(c) - 100
    for k in range(6):
        w = make_premixed_window(plan, "train", k)
        valid = plan.clean[0].length - w.meta["clean_offset"]
        assert np.all(w.clean[valid:] == 0) and np.all(w.noisy[valid:] == 0)


def test_rerun_resumes_a_premixed_cache_and_a_changed_corpus_is_refused(tmp_path):
    clean, noisy = _voicebank(tmp_path / "vb")
    out = tmp_path / "cache"
    _build(clean, noisy, out)
    reference = read_split(open_split(out, load_manifest(out), "train"))
    (out / "train.zarr" / "noisy" / "c" / "1" / "0" / "0").unlink()  # a shard lost
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][2]["status"] = "pending"  # one never finished
    (out / "manifest.json").write_text(json.dumps(manifest))
    again = _build(clean, noisy, out)
    assert again.complete and again.shards_built == 2
    resumed = read_split(open_split(out, load_manifest(out), "train"))
    np.testing.assert_array_equal(resumed[0], reference[0])
    np.testing.assert_array_equal(resumed[1], reference[1])
    shutil.copy(noisy / "p226_001.wav", noisy / "p230_001.wav")  # unpaired now
    from cleancodec.pipeline.build import CacheMismatchError

    with pytest.raises(CacheMismatchError, match="input files changed"):
        _build(clean, noisy, out)


# --- parallel builds: torchrun ranks and worker processes (the CLI, in subprocesses) ---------

_CLI = ("import sys; from cleancodec.cli import main; "
        "sys.argv = ['cleancodec', *sys.argv[1:]]; main()")


def _cli_args(clean: Path, noisy: Path, out: Path, *extra: str) -> list[str]:
    cfg = _cfg()
    return [sys.executable, "-c", _CLI, "cache", "--codec", "random", "--clean", str(clean),
            "--noisy", str(noisy), "--out", str(out), "--quiet", *extra,
            "codec.random_arch=tiny", "codec.num_threads=1", "codec.batch_size=4",
            f"cache.train_windows={cfg.train_windows}", f"cache.val_windows={cfg.val_windows}",
            f"cache.windows_per_shard={cfg.windows_per_shard}", f"cache.seed={cfg.seed}",
            f"cache.val_fraction={cfg.val_fraction}", "cache.mix.window_seconds=1.0"]


@pytest.mark.slow
def test_torchrun_ranks_and_workers_build_the_single_process_premixed_cache(tmp_path):
    clean, noisy = _dns(tmp_path / "dns", variants=2)
    single = tmp_path / "single"
    done = subprocess.run(_cli_args(clean, noisy, single), cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(_cli_args(clean, noisy, tmp_path / "ranks"), cwd=REPO,
                                      env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    done = subprocess.run(_cli_args(clean, noisy, tmp_path / "workers", "--workers", "2"),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    reference = load_manifest(single, require_complete=True)
    assert reference["premixed"]["rule"] == "fileid" and reference["noisy_per_clean"] == 2
    for other in ("ranks", "workers"):
        m = load_manifest(tmp_path / other, require_complete=True)
        assert m["premixed"] == reference["premixed"]
        for split in ("train", "val"):
            a = read_split(open_split(single, reference, split))
            b = read_split(open_split(tmp_path / other, m, split))
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


# --- noise and noisy exclude each other -------------------------------------------------------


def test_noise_and_noisy_together_are_refused(tmp_path):
    from cleancodec.cli import main

    for d in ("c", "n", "m"):
        (tmp_path / d).mkdir()
    result = CliRunner().invoke(main, ["cache", "--clean", str(tmp_path / "c"), "--noise",
                                       str(tmp_path / "n"), "--noisy", str(tmp_path / "m"),
                                       "--codec", "random", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--noise and --noisy exclude each other" in result.output
    assert not (tmp_path / "o").exists()
    with pytest.raises(CorpusError, match="exclude each other"):
        resolve_inputs(_cfg(), tmp_path / "c", tmp_path / "n", noisy_dir=tmp_path / "m")
    with pytest.raises(CorpusError, match="cache.noise .* and cache.noisy .* are both set"):
        resolve_inputs(_cfg(clean=str(tmp_path / "c"), noise=str(tmp_path / "n"),
                            noisy=str(tmp_path / "m")))
    # an argument beats the profile's other folder
    inputs = resolve_inputs(_cfg(noise=str(tmp_path / "n")), tmp_path / "c",
                            noisy_dir=tmp_path / "m")
    assert inputs.premixed and inputs.noise is None and inputs.noisy == tmp_path / "m"
    assert inputs.roles == ("clean", "noisy", "rir")
