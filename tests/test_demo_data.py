"""Demo corpus builds: a whole offline build from tiny .deb packages made here with dpkg-deb
(no apt needed), rebuilds, apt failures, leftovers, the CLI, and `make demo`'s steps.

The slow test builds the real corpus from Debian's packages through apt.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cleancodec.core.config import load_section
from cleancodec.core.corpus_index import INDEX_NAME, read_index
from cleancodec.core.dns import pair_by_fileid, parse_noisy_name
from cleancodec.datagen.demo import debs
from cleancodec.datagen.demo.build import build_demo_data, sweep_leftovers
from cleancodec.datagen.demo.config import (
    DemoDataConfig,
)
from cleancodec.datagen.demo.g722_codec import (
    encode_g722_bytes,
)
from cleancodec.datagen.demo.index import split_paths
from cleancodec.datagen.demo.splits import check_disjoint
from cleancodec.pipeline.mix import rms_dbfs, snr_db
from tests.helpers import REPO, SR, padded, voiced_tone, write_wav

# --- a whole build from tiny local packages ---------------------------------------------------


def _make_deb(cache: Path, package: str, files: dict[str, bytes], copyright_text: str) -> None:
    assert shutil.which("dpkg-deb"), "dpkg-deb is needed to build test packages (Debian's dpkg)"
    tree = cache.parent / f"tree-{package}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\n"
        f"Maintainer: Test <test@example.org>\nDescription: test package\n")
    files = {**files, f"usr/share/doc/{package}/copyright": copyright_text.encode()}
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-Zgzip", "--root-owner-group", "--build", str(tree),
                    str(cache / f"{package}_1.0-1_all.deb")], check=True, capture_output=True)


def _voice_files(voice: str, f0: float, n: int, extra: dict[str, bytes] | None = None):
    files = {}
    for i in range(n):
        audio = padded(voiced_tone(0.8 + 0.15 * (i % 4), f0=f0, seed=i), 0.2)
        files[f"usr/share/sounds/{voice}/p{i:02d}.g722"] = encode_g722_bytes(audio)
    files.update(extra or {})
    return files


def _flac(x: np.ndarray, sr: int, tmp: Path) -> bytes:
    path = tmp / "x.flac"
    sf.write(path, x, sr)
    return path.read_bytes()


@pytest.fixture(scope="module")
def tiny_packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("debs")
    cache = root / "cache"
    _make_deb(cache, "voice-a", _voice_files("a", 120.0, 10, {
        "usr/share/sounds/a/empty.g722": b""}), "License: CC-BY-SA-3.0\n")
    _make_deb(cache, "voice-a2", _voice_files("a2", 125.0, 6), "License: CC-BY-SA-3.0\n")
    _make_deb(cache, "voice-b", _voice_files("b", 200.0, 8, {
        "usr/share/sounds/b/broken.wav": b"RIFF....WAVEjunk"}), "License: CC-BY-3.0\n")
    _make_deb(cache, "voice-c", _voice_files("c", 230.0, 24), "License: CC-BY-3.0\n")
    rng = np.random.default_rng(0)
    noise_files = {
        f"usr/share/samples/ambi_{i}.flac":
            _flac((0.1 * rng.standard_normal((int(2.5 * SR), 2))).astype(np.float32), 44100, root)
        for i in range(3)}
    for i in range(3):
        hit = (np.hanning(800) * rng.standard_normal(800)).astype(np.float32)
        noise_files[f"usr/share/samples/hit_{i}.flac"] = _flac(hit, 44100, root)
    noise_files["usr/share/samples/readme_like.flac"] = b"not audio"
    dep5 = ("Files: *\nLicense: MIT\n\nFiles: usr/share/samples/ambi_0.flac\nLicense: CC0\n")
    _make_deb(cache, "noise-pack", noise_files, dep5)
    return cache


def _tiny_cfg(tmp_path: Path) -> Path:
    conf = tmp_path / "tiny_demo.yaml"
    conf.write_text("""
demo_data:
  seed: 5
  apt_update: never
  speech:
    - {package: voice-a, speaker: a, language: en-US, license: CC-BY-SA-3.0,
       files: "usr/share/sounds/a/*.g722"}
    - {package: voice-a2, speaker: a, language: es-MX, license: CC-BY-SA-3.0,
       files: "usr/share/sounds/a2/*.g722"}
    - {package: voice-b, speaker: b, language: it-IT, license: CC-BY-3.0,
       files: "usr/share/sounds/b/*"}
    - {package: voice-c, speaker: c, language: fr-CA, license: CC-BY-3.0,
       files: "usr/share/sounds/c/*.g722"}
  splits:
    speakers: {train: [a], val: [b], test: [c]}
  noise_packages:
    - package: noise-pack
      license: CC0-1.0
      files: "usr/share/samples/*.flac"
      kinds: {ambience: ["ambi_*"], hits: ["hit_*", "readme*"]}
  sessions: {seconds: 4.0}
  real_noise: {segment_seconds: 1.0, min_file_seconds: 0.5, event_sequence_seconds: 2.0,
               event_sequences: {train: 1, val: 1, test: 1}}
  generated:
    kinds: [white, hum, babble, nonstationary]
    seconds: 1.5
    files: {train: 2, val: 1, test: 1}
  testset: {clips: 4, seconds: 2.0, min_active_fraction: 0.5}
""")
    return conf


def _index(root: Path) -> list[dict]:
    with open(root / "index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_offline_build_from_local_packages(tiny_packages, tmp_path):
    cfg = load_section(_tiny_cfg(tmp_path), "demo_data", DemoDataConfig)
    out = tmp_path / "demo"
    report = build_demo_data(cfg, out, tiny_packages)
    assert report.ok, report.failures
    rows = read_index(out / INDEX_NAME)
    # every listed file exists, is 16 kHz mono and as long as the index says
    for r in rows:
        info = sf.info(out / r.path)
        assert info.samplerate == SR and info.channels == 1
        assert info.frames / SR == pytest.approx(r.duration_s, abs=2e-3)
    speakers = {(r.speaker, r.split) for r in rows if r.role == "clean"}
    assert speakers == {("a", "train"), ("b", "val"), ("c", "test")}
    langs = {r.language for r in rows if r.speaker == "a" and r.role == "clean"}
    assert langs == {"en-US", "es-MX"}
    # bad inputs were skipped and listed, not fatal
    skipped = {(s.unit, s.file) for s in report.skipped}
    assert ("speech/voice-a", "empty.g722") in skipped
    assert ("speech/voice-b", "broken.wav") in skipped
    assert ("noise/noise-pack", "readme_like.flac") in skipped
    with open(out / "skipped.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(report.skipped)
    # noise: held out per recording, per-file license from the copyright file, all splits fed
    noise = [r for r in rows if r.role == "noise"]
    assert {r.split for r in noise if r.kind == "ambience"} == {"train", "val", "test"}
    lic = {r.origin: r.license for r in noise if r.kind == "ambience"}
    assert lic.get("ambi_0.flac", "CC0") == "CC0" and set(lic.values()) <= {"CC0", "CC0-1.0"}
    assert {r.kind for r in noise} >= {"ambience", "hits", "white", "hum", "babble",
                                        "nonstationary"}
    babble = [r for r in noise if r.kind == "babble"]
    assert all(o.startswith("clean/a/") for r in babble for o in r.origin.split())
    check_disjoint(rows)
    assert (out / "licenses/voice-a.copyright").read_text().startswith("License")
    # the test set: test speaker only, test noise only, names carry SNR and level exactly
    pairs = pair_by_fileid(out / "testset/clean", out / "testset/noisy")
    assert len(pairs) == 4
    test_noise = {Path(r.path).stem.replace("_", "-") for r in noise if r.split == "test"}
    for clean_path, noisy_path in pairs:
        info = parse_noisy_name(noisy_path.name)
        assert 0 <= info.snr_db <= 20 and -35 <= info.level_dbfs <= -15
        clean, _ = sf.read(clean_path, dtype="float32")
        noisy, _ = sf.read(noisy_path, dtype="float32")
        assert len(clean) == len(noisy) == 2 * SR
        assert snr_db(clean, noisy - clean) == pytest.approx(info.snr_db, abs=0.3)
        assert rms_dbfs(noisy) == pytest.approx(info.level_dbfs, abs=0.6)
        assert noisy_path.name.split("_")[2] in test_noise
    ts = [r for r in rows if r.role.startswith("testset")]
    assert {r.speaker for r in ts} == {"c"} and len(ts) == 8
    assert split_paths(out, "train", "clean") == sorted(
        out / r.path for r in rows if r.role == "clean" and r.split == "train")
    splits = (out / "splits.json").read_text()
    assert '"test"' in splits and '"c"' in splits


def test_rebuild_reuses_everything_and_config_changes_rebuild_only_what_changed(
        tiny_packages, tmp_path):
    conf = _tiny_cfg(tmp_path)
    out = tmp_path / "demo"
    first = build_demo_data(load_section(conf, "demo_data", DemoDataConfig), out, tiny_packages)
    snapshot = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    again = build_demo_data(load_section(conf, "demo_data", DemoDataConfig), out, tiny_packages)
    assert again.built == [] and len(again.reused) == len(first.built)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == snapshot
    assert sorted(map(dataclasses.astuple, again.rows)) == sorted(
        map(dataclasses.astuple, first.rows))
    # fewer generated files: only that kind (and the test set, which draws from noise) redone,
    # and the files no longer produced are removed
    cfg = load_section(conf, "demo_data", DemoDataConfig)
    cfg.generated.files = {"train": 1, "val": 1, "test": 1}
    third = build_demo_data(cfg, out, tiny_packages)
    assert not any(u.startswith("speech/") for u in third.built)
    assert "generated/white" in third.built and third.removed_stale >= 4
    assert not (out / "noise/white/white-train_001.wav").exists()
    listed = {(out / r.path).resolve() for r in third.rows}
    assert {p.resolve() for p in out.rglob("*.wav")} == listed
    # an interrupted build leaves no half files: a deleted output makes its unit rebuild
    victim = next(out.glob("clean/c/*.wav"))
    victim.unlink()
    fourth = build_demo_data(cfg, out, tiny_packages)
    assert "speech/voice-c" in fourth.built and victim.exists()
    assert not list(out.rglob("*.tmp"))


def test_missing_package_is_reported_with_a_remedy_and_the_rest_is_built(
        tiny_packages, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_packages, cache)
    next(cache.glob("voice-b_*.deb")).unlink()
    real_which = shutil.which
    monkeypatch.setattr(debs.shutil, "which",
                        lambda name: None if name == "apt-get" else real_which(name))
    cfg = load_section(_tiny_cfg(tmp_path), "demo_data", DemoDataConfig)
    out = tmp_path / "demo"
    report = build_demo_data(cfg, out, cache)
    assert not report.ok
    failure = "\n".join(report.failures)
    assert "voice-b: apt-get is not available" in failure and "copy voice-b_*.deb" in failure
    assert "speech/voice-c" in report.built and "testset" in report.built
    assert not (out / "clean/b").exists()
    assert not list(out.rglob(".download-*")) and not list(cache.glob(".download-*"))
    assert not list(out.glob(".unpack-*"))


FAKE_APT = """#!/bin/sh
# stand-in for apt-get: logs its calls; "download" fails as with stale package lists until
# "update" has run, or always with a network error when $FAKE_APT_MODE is "offline"
echo "$*" >> "$FAKE_APT_LOG"
if [ "$1" = "update" ]; then touch "$FAKE_APT_STATE/updated"; exit 0; fi
pkg="$3"
if [ "$FAKE_APT_MODE" = "offline" ]; then
  echo "E: Failed to fetch http://deb.debian.org/x  Temporary failure resolving" >&2; exit 100
fi
if [ -f "$FAKE_APT_STATE/updated" ]; then echo deb > "${pkg}_1.0_all.deb"; exit 0; fi
echo "E: Unable to locate package $pkg" >&2; exit 100
"""


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "apt-get"
    script.write_text(FAKE_APT)
    script.chmod(0o755)
    log = tmp_path / "apt.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APT_LOG", str(log))
    monkeypatch.setenv("FAKE_APT_STATE", str(tmp_path))
    return lambda: log.read_text().splitlines() if log.exists() else []


def test_stale_package_lists_are_updated_once_when_root(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setattr(debs, "is_root", lambda: True)
    fetcher = debs.AptFetcher(tmp_path / "cache", "auto")
    deb = fetcher.fetch("voice-q")
    assert deb == tmp_path / "cache" / "voice-q_1.0_all.deb" and deb.is_file()
    assert fake_apt() == ["download -q voice-q", "update -q", "download -q voice-q"]
    assert fetcher.fetch("voice-q") == deb and len(fake_apt()) == 3  # cached: apt not called
    assert not list((tmp_path / "cache").glob(".download-*"))


def test_stale_package_lists_say_what_to_run_when_not_root(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setattr(debs, "is_root", lambda: False)
    with pytest.raises(debs.PackageError,
                       match=r"voice-q: apt cannot find[\s\S]*sudo apt-get update"):
        debs.AptFetcher(tmp_path / "cache", "auto").fetch("voice-q")
    assert fake_apt() == ["download -q voice-q"]


def test_network_failure_names_the_package_and_leaves_nothing(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setattr(debs, "is_root", lambda: True)
    monkeypatch.setenv("FAKE_APT_MODE", "offline")
    with pytest.raises(debs.PackageError, match="voice-q: apt-get download failed.*resolving"):
        debs.AptFetcher(tmp_path / "cache", "auto").fetch("voice-q")
    assert fake_apt() == ["download -q voice-q"]  # not a stale list: no update attempted
    assert list((tmp_path / "cache").iterdir()) == []


def test_corrupt_cached_deb_fails_its_part_only_and_leaves_no_unpacked_files(
        tiny_packages, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_packages, cache)
    next(cache.glob("voice-c_*.deb")).write_bytes(b"!<arch>\ntruncated download")
    cfg = load_section(_tiny_cfg(tmp_path), "demo_data", DemoDataConfig)
    report = build_demo_data(cfg, tmp_path / "demo", cache)
    failure = "\n".join(report.failures)
    assert "voice-c: voice-c_1.0-1_all.deb is not a readable .deb" in failure
    assert "testset: not built because" in failure  # needs the test speaker
    assert "speech/voice-a" in report.built and not list(cache.glob("voice-c_*"))
    assert not list((tmp_path / "demo").glob(".unpack-*"))


def test_leftovers_of_a_killed_build_are_swept_when_old(tmp_path):
    root, cache = tmp_path / "demo", tmp_path / "cache"
    old_dirs = [root / ".unpack-abc", cache / ".download-x"]
    old_file = root / "clean/a/.a_000.wav.x.tmp"
    for d in old_dirs:
        d.mkdir(parents=True)
    old_file.parent.mkdir(parents=True)
    old_file.write_bytes(b"half")
    young = root / ".unpack-now"
    young.mkdir()
    keep = root / "clean/a/a_000.wav"
    keep.write_bytes(b"done")
    old = [*old_dirs, old_file]
    for p in [*old, keep]:
        os.utime(p, (1, 1))
    assert sweep_leftovers(root, cache) == 3
    assert not any(p.exists() for p in old) and young.exists() and keep.exists()


def test_corrupt_cached_deb_is_removed_and_named(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    bad = cache / "voice-z_1.0_all.deb"
    bad.write_bytes(b"!<arch>\nnot a deb")
    with pytest.raises(debs.PackageError, match="voice-z: voice-z_1.0_all.deb is not a readable"):
        debs.unpack_deb(bad, tmp_path / "x", "voice-z")
    assert not bad.exists()


def test_cli_builds_and_prints_the_summary(tiny_packages, tmp_path):
    from click.testing import CliRunner

    from cleancodec.cli import main

    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo-data", "--conf", str(_tiny_cfg(tmp_path)),
                                       "--out", str(out), "--deb-cache", str(tiny_packages)])
    assert result.exit_code == 0, result.output
    assert "speaker" in result.output and "noise kind" in result.output
    assert "test set: 4 clips" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("demo_data:\n  speech: []\n")
    result = CliRunner().invoke(main, ["demo-data", "--conf", str(bad), "--out", str(out)])
    assert result.exit_code != 0 and "no speech sources" in result.output


# --- the real corpus --------------------------------------------------------------------------


@pytest.mark.slow
def test_real_demo_corpus_from_debian_packages(tmp_path):
    """Builds the shipped corpus definition through apt (reusing data/demo/.debs when there).

    Fails, with the package and what to do, when the Debian sources cannot be reached.
    """
    cfg = load_section(REPO / "conf/demo_data.yaml", "demo_data", DemoDataConfig)
    cache = REPO / "data/demo/.debs"
    out = tmp_path / "demo"
    report = build_demo_data(cfg, out, cache)
    assert report.ok, "demo corpus build failed:\n" + "\n".join(report.failures)
    rows = read_index(out / INDEX_NAME)
    check_disjoint(rows)
    split_of = {}
    for r in rows:
        if r.role == "clean":
            assert split_of.setdefault(r.speaker, r.split) == r.split
    assert set(split_of.values()) == {"train", "val", "test"}
    assert not set(cfg.splits.speakers["test"]) & {s for s, sp in split_of.items() if sp != "test"}
    minutes = {s: sum(r.duration_s for r in rows if r.role == "clean" and r.split == s) / 60
               for s in ("train", "val", "test")}
    assert minutes["train"] > 40 and minutes["val"] > 5 and minutes["test"] > 10, minutes
    for r in rows[:: max(1, len(rows) // 60)]:  # spot-check files against the index
        info = sf.info(out / r.path)
        assert info.samplerate == SR and info.channels == 1
        assert info.frames / SR == pytest.approx(r.duration_s, abs=2e-3)
    pairs = pair_by_fileid(out / "testset/clean", out / "testset/noisy")
    assert len(pairs) == cfg.testset.clips
    for c, n in pairs:
        clean, _ = sf.read(c, dtype="float32")
        noisy, _ = sf.read(n, dtype="float32")
        info = parse_noisy_name(n.name)
        assert len(clean) == len(noisy) == int(cfg.testset.seconds * SR)
        assert 0 <= info.snr_db <= 20
        assert snr_db(clean, noisy - clean) == pytest.approx(info.snr_db, abs=0.3)
        assert rms_dbfs(noisy) == pytest.approx(info.level_dbfs, abs=0.6)
    kinds = {r.kind for r in rows if r.role == "noise"}
    assert {"music", "vinyl", "babble", "hum", "pink", "white", "brown", "crackle",
            "nonstationary"} <= kinds
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size < 250 * 2**20, f"corpus is {size / 2**20:.0f} MiB"
    again = build_demo_data(cfg, out, cache)
    assert again.built == [] and again.ok


# --- make demo's steps ------------------------------------------------------------------------


def test_demo_preflight_explains_missing_weights(tmp_path):
    from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig, CodecWeightsError
    from cleancodec.datagen.demo.preflight import (
        EXIT_NO_WEIGHTS,
        missing_weights_message,
        preflight,
        run_preflight,
    )

    assert preflight(CodecConfig(weights="random")) == RANDOM_INIT_BANNER
    assert run_preflight(None, "random") == (0, RANDOM_INIT_BANNER)
    with pytest.raises(CodecWeightsError, match="no such weights file") as err:
        preflight(CodecConfig(weights=str(tmp_path / "missing.pth")))
    message = missing_weights_message(err.value)
    assert "make demo CODEC=random" in message and "CODEC=/path/to/" in message
    status, text = run_preflight(None, str(tmp_path / "missing.pth"))
    assert status == EXIT_NO_WEIGHTS and "missing.pth" in text and "make demo CODEC=random" in text


def test_demo_testset_excerpt_copies_pairs_by_fileid(tmp_path):
    from cleancodec.datagen.demo.excerpt import copy_testset

    root = tmp_path / "corpus" / "testset"
    for k in range(3):
        write_wav(root / "clean" / f"clean_fileid_{k}.wav", np.full(SR // 10, 0.1, np.float32))
        write_wav(root / "noisy" / f"synth_snr5_tl-25_fileid_{k}.wav",
                  np.full(SR // 10, 0.2, np.float32))
    (root / "clean" / "clean_fileid_7.wav").write_bytes(b"")  # no noisy partner
    names = copy_testset(tmp_path / "corpus", tmp_path / "out", clips=1)
    assert names == ["synth_snr5_tl-25_fileid_0.wav"]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.wav")) == \
        ["clean_fileid_0.wav", "synth_snr5_tl-25_fileid_0.wav"]
    assert len(copy_testset(tmp_path / "corpus", tmp_path / "all", clips=0)) == 3
    assert not list((tmp_path / "out").rglob(".*.tmp"))
    for kind in ("clean", "noisy"):
        (tmp_path / "empty" / "testset" / kind).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no clean/noisy pairs"):
        copy_testset(tmp_path / "empty", tmp_path / "x", clips=1)
