"""infer.evaluate / metrics / testset: pairing, numbers equal the reference packages, reports."""
from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest
import soundfile as sf
from scipy import stats

from cleancodec.core.codec import RANDOM_INIT_BANNER
from cleancodec.core.dns import fileid
from cleancodec.infer.evaluate import EvaluateConfig, evaluate_dirs, mean_ci
from cleancodec.infer.metrics import si_sdr
from cleancodec.infer.run import REPORT_NAME
from cleancodec.infer.testset import pair_files

SR = 16000
SECONDS = 5.0  # DNSMOS scores 9.01 s windows; a 5 s clip is repeated once: one window


def speech(seed: int, seconds: float = SECONDS) -> np.ndarray:
    """Voiced, formant-shaped syllables with pauses: float32 ``[T]`` at 16 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = (100 + 60 * rng.uniform()) * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    formants = rng.uniform([500, 1200], [800, 2200])
    x = np.zeros(n)
    for k in range(1, 30):
        fk = k * f0
        gain = sum(1 / (1 + ((fk - f) / 120) ** 2) for f in formants) / k ** 0.5
        x += gain * np.sin(k * phase)
    syllables = (np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 6)) > 0) \
        * (np.sin(2 * np.pi * 0.4 * t) > -0.6)
    x *= syllables
    return (0.25 * x / np.max(np.abs(x))).astype(np.float32)


def noise(seed: int, seconds: float = SECONDS) -> np.ndarray:
    return (0.03 * np.random.default_rng(1000 + seed).standard_normal(int(seconds * SR))
            ).astype(np.float32)


@pytest.fixture(scope="module")
def testset(tmp_path_factory):
    """DNS-named clean / noisy folders and an enhanced folder that keeps the noisy names."""
    root = tmp_path_factory.mktemp("testset")
    for sub in ("clean", "noisy", "enhanced"):
        (root / sub).mkdir()
    for i in range(3):
        c, n = speech(i), noise(i)
        noisy_name = f"book_0{i}_snr{5 + i}_tl-25_fileid_{i}.wav"
        sf.write(root / "clean" / f"clean_fileid_{i}.wav", c, SR)
        sf.write(root / "noisy" / noisy_name, c + n, SR)
        sf.write(root / "enhanced" / noisy_name, c + (0.2 + 0.2 * i) * n, SR)
    sf.write(root / "clean" / "clean_fileid_9.wav", speech(9), SR)  # never enhanced
    return root


@pytest.fixture(scope="module")
def evaluated(testset, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    result = evaluate_dirs(testset / "enhanced", out, clean=testset / "clean",
                           noisy=testset / "noisy", cfg=EvaluateConfig(workers=1, spectrograms=2),
                           progress=False)
    return result, out


# --- pairing ----------------------------------------------------------------------------------


def test_pairs_by_relative_path_extension_or_dns_fileid(tmp_path):
    for sub, names in {"clean": ["a/x.wav", "b.wav", "clean_fileid_3.wav", "clean_fileid_4.wav",
                                 "orphan.wav"],
                       "enh": ["a/x.wav", "b.flac", "noisy_snr0_fileid_3.wav", "lost.wav"]}.items():
        for name in names:
            (tmp_path / sub / name).parent.mkdir(parents=True, exist_ok=True)
            sf.write(tmp_path / sub / name, np.zeros(160, np.float32), SR)
    pairing = pair_files(tmp_path / "enh", tmp_path / "clean")
    got = {p.key: p.clean.relative_to(tmp_path / "clean").as_posix() for p in pairing.pairs}
    assert got == {"a/x.wav": "a/x.wav", "b.flac": "b.wav",
                   "noisy_snr0_fileid_3.wav": "clean_fileid_3.wav"}
    assert pairing.enhanced_without_clean == ["lost.wav"]
    assert sorted(pairing.clean_without_enhanced) == ["clean_fileid_4.wav", "orphan.wav"]
    assert fileid("x/book_snr5_tl-25_fileid_17.wav") == 17 and fileid("b.wav") is None
    alone = pair_files(tmp_path / "enh")  # reference-free: every file on its own
    assert len(alone.pairs) == 4 and all(p.clean is None for p in alone.pairs)


# --- the numbers ------------------------------------------------------------------------------


def direct_scores(clean: np.ndarray, est: np.ndarray, encoder) -> dict[str, float]:
    """The reference packages called directly, the way their READMEs show."""
    from pesq import pesq
    from pystoi import stoi
    from resemblyzer import preprocess_wav
    from speechmos import dnsmos

    d = dnsmos.run(est, SR)
    a = encoder.embed_utterance(preprocess_wav(clean, source_sr=SR))
    b = encoder.embed_utterance(preprocess_wav(est, source_sr=SR))
    return {"dnsmos_ovrl": d["ovrl_mos"], "dnsmos_sig": d["sig_mos"], "dnsmos_bak": d["bak_mos"],
            "dnsmos_p808": d["p808_mos"], "pesq": pesq(SR, clean, est, "wb"),
            "stoi": stoi(clean, est, SR), "spk_sim": float(np.dot(a, b))}


def test_numbers_equal_direct_calls_of_the_reference_packages(testset, evaluated):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from resemblyzer import VoiceEncoder
    encoder = VoiceEncoder(device="cpu", verbose=False)
    result, out = evaluated
    with open(out / "per_file.csv") as fh:
        csv_rows = {r["file"]: r for r in csv.DictReader(fh)}
    for row in result.rows:
        clean, _ = sf.read(row["clean"], dtype="float32")
        for cond, path in (("enhanced", testset / "enhanced" / row["file"]),
                           ("noisy", row["noisy"])):
            est, _ = sf.read(path, dtype="float32")
            for metric, value in direct_scores(clean, est, encoder).items():
                assert row[f"{cond}_{metric}"] == pytest.approx(value, rel=1e-6, abs=1e-6), \
                    (cond, metric)
                assert float(csv_rows[row["file"]][f"{cond}_{metric}"]) == \
                    pytest.approx(value, rel=1e-5)
        assert row["clean_dnsmos_ovrl"] == pytest.approx(
            __import__("speechmos").dnsmos.run(clean, SR)["ovrl_mos"], rel=1e-6)
    # the better enhanced copies score better: the numbers mean something
    by_noise = sorted(result.rows, key=lambda r: r["file"])
    assert by_noise[0]["enhanced_pesq"] > by_noise[2]["enhanced_pesq"]
    assert all(r["enhanced_si_sdr"] > r["noisy_si_sdr"] for r in result.rows)


def test_si_sdr_matches_its_definition():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(8000)
    ref -= ref.mean()
    resid = rng.standard_normal(8000)
    resid -= resid.mean()
    resid -= ref * np.dot(resid, ref) / np.dot(ref, ref)  # orthogonal to the reference
    resid *= np.linalg.norm(ref) / np.linalg.norm(resid) / 10 ** (12.0 / 20)
    assert si_sdr(ref, 0.3 * ref + 0.3 * resid) == pytest.approx(12.0, abs=1e-6)
    assert si_sdr(ref, 5.0 * (ref + resid) + 0.7) == pytest.approx(12.0, abs=1e-6)


# --- the reports ------------------------------------------------------------------------------


def test_summary_table_and_spectrograms(evaluated, testset):
    result, out = evaluated
    summary = json.loads((out / "summary.json").read_text())
    pesq_vals = [r["enhanced_pesq"] for r in result.rows]
    s = summary["conditions"]["enhanced"]["pesq"]
    lo, hi = stats.t.interval(0.95, len(pesq_vals) - 1, loc=np.mean(pesq_vals),
                              scale=stats.sem(pesq_vals))
    assert s["n"] == 3 and s["mean"] == pytest.approx(np.mean(pesq_vals))
    assert s["ci95"] == pytest.approx((hi - lo) / 2)
    assert set(summary["conditions"]) == {"noisy", "enhanced", "clean"}
    assert set(summary["conditions"]["clean"]) == {"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak",
                                                   "dnsmos_p808"}
    assert summary["unmatched"]["clean_without_enhanced"] == ["clean_fileid_9.wav"]
    table = (out / "results.md").read_text().splitlines()
    assert table[0].startswith("| | DNSMOS OVRL") and "PESQ-WB" in table[0]
    assert table[2].startswith("| noisy (n=3) |") and table[3].startswith("| enhanced (n=3) |")
    assert f"{s['mean']:.3f} ± {s['ci95']:.3f}" in table[3]
    pngs = sorted((out / "spectrograms").glob("*.png"))
    assert len(pngs) == 2
    import matplotlib.image

    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = matplotlib.image.imread(png)
        assert img.shape[0] > 400 and img.shape[1] > 600 and img[..., :3].std() > 0.05
    # best and worst enhanced PESQ were picked
    best = max(result.rows, key=lambda r: r["enhanced_pesq"])["file"]
    assert any(best.rsplit(".", 1)[0] in p.name for p in pngs)


def test_mean_ci_edge_cases():
    assert mean_ci([]) == {"mean": None, "ci95": None, "n": 0}
    assert mean_ci([2.0, float("nan")]) == {"mean": 2.0, "ci95": None, "n": 1}
    out = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert out["mean"] == 2.5 and out["ci95"] == pytest.approx(
        stats.t.ppf(0.975, 3) * np.std([1, 2, 3, 4], ddof=1) / 2)


def test_reference_free_mode_bad_files_and_random_codec_banner(tmp_path, testset):
    enh = tmp_path / "enh"
    enh.mkdir()
    for i in range(2):
        sf.write(enh / f"rec_{i}.wav", speech(10 + i) + noise(i), SR)
    (enh / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (enh / REPORT_NAME).write_text(json.dumps({"warning": RANDOM_INIT_BANNER, "enhancer": {}}))
    result = evaluate_dirs(enh, tmp_path / "out", cfg=EvaluateConfig(workers=1, spectrograms=1),
                           progress=False)
    good = [r for r in result.rows if "error" not in r]
    assert len(good) == 2 and "broken.wav" in result.summary["failed"]
    assert all(math.isfinite(r["enhanced_dnsmos_ovrl"]) for r in good)
    assert not any(k.endswith(("pesq", "stoi", "si_sdr", "spk_sim")) for r in good for k in r)
    assert result.summary["reference_free"]
    assert set(result.summary["conditions"]) == {"enhanced"}
    # every output says first that the audio came from a random-init codec
    out = tmp_path / "out"
    assert (out / "per_file.csv").read_text().splitlines()[0] == f"# {RANDOM_INIT_BANNER}"
    assert RANDOM_INIT_BANNER in (out / "results.md").read_text().splitlines()[0]
    assert next(iter(json.loads((out / "summary.json").read_text()))) == "warning"
    assert len(list((out / "spectrograms").glob("*.png"))) == 1


@pytest.mark.slow
def test_worker_processes_give_the_same_numbers(testset, evaluated, tmp_path):
    serial, _ = evaluated
    parallel = evaluate_dirs(testset / "enhanced", tmp_path, clean=testset / "clean",
                             noisy=testset / "noisy",
                             cfg=EvaluateConfig(workers=2, spectrograms=0), progress=False)
    assert [r["file"] for r in parallel.rows] == [r["file"] for r in serial.rows]
    for a, b in zip(parallel.rows, serial.rows):
        for key, value in b.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key


# --- composite measures and README tables -----------------------------------------------------


def test_composite_columns_join_the_rows_and_the_summary(evaluated, testset):
    from cleancodec.infer.composite import composite
    from cleancodec.infer.metrics import COMPOSITE_COLUMNS

    result, out = evaluated
    for row in result.rows:
        clean, _ = sf.read(row["clean"], dtype="float32")
        est, _ = sf.read(testset / "enhanced" / row["file"], dtype="float32")
        expected = composite(clean, est, row["enhanced_pesq"]).as_dict()
        for col in COMPOSITE_COLUMNS:
            assert row[f"enhanced_{col}"] == pytest.approx(expected[col], rel=1e-9), col
            assert math.isfinite(row[f"noisy_{col}"])
    conditions = json.loads((out / "summary.json").read_text())["conditions"]
    for col in COMPOSITE_COLUMNS:
        s = conditions["enhanced"][col]
        assert s["n"] == 3 and s["ci95"] is not None
        assert s["mean"] == pytest.approx(np.mean([r[f"enhanced_{col}"] for r in result.rows]))
    # less noise left in: a better background score
    assert conditions["enhanced"]["cbak"]["mean"] > conditions["noisy"]["cbak"]["mean"]
    header = (out / "results.md").read_text().splitlines()[0]
    assert "| CSIG | CBAK | COVL |" in header  # the default table keeps every column


def test_table_presets_choose_the_readme_columns(evaluated):
    from cleancodec.infer.evaluate import TABLES, markdown_table

    result, _ = evaluated
    stats = result.summary["conditions"]
    voicebank = markdown_table(stats, columns=TABLES["voicebank"]).splitlines()
    assert voicebank[0] == "| | PESQ-WB | CSIG | CBAK | COVL | STOI |"
    assert [line.split("|")[1].strip() for line in voicebank[2:]] == ["noisy (n=3)",
                                                                     "enhanced (n=3)"]
    csig = stats["enhanced"]["csig"]
    assert voicebank[3].split("|")[3].strip() == f"{csig['mean']:.3f} ± {csig['ci95']:.3f}"
    dns = markdown_table(stats, columns=TABLES["dns"]).splitlines()
    assert dns[0] == ("| | DNSMOS SIG | DNSMOS BAK | DNSMOS OVRL | DNSMOS P.808 | PESQ-WB | "
                      "STOI | SI-SDR (dB) | SpkSim |")
    clean_row = dns[-1].split("|")
    assert clean_row[1].strip() == "clean (n=3)" and clean_row[6].strip() == "–"  # no PESQ
    with pytest.raises(ValueError, match="evaluate.table"):
        EvaluateConfig(table="wsj")


def test_cli_table_option_writes_the_chosen_table(testset, tmp_path):
    from click.testing import CliRunner

    from cleancodec.cli import main
    from cleancodec.infer.evaluate import TABLES

    command = main.get_command(None, "evaluate")
    choice = next(p for p in command.params if p.name == "table")
    assert list(choice.type.choices) == list(TABLES)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "evaluate", "--enhanced", str(testset / "enhanced"), "--clean", str(testset / "clean"),
        "--out", str(out), "--table", "voicebank", "--workers", "1", "--spectrograms", "0",
        "--quiet", "evaluate.metrics=[pesq,stoi,composite]"])
    assert result.exit_code == 0, result.output
    table = (out / "results.md").read_text().splitlines()
    assert table[0] == "| | PESQ-WB | CSIG | CBAK | COVL | STOI |"
    assert table[2].startswith("| enhanced (n=3) |") and "–" not in table[2]
    assert "| | PESQ-WB | CSIG | CBAK | COVL | STOI |" in result.output
