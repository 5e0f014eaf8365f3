"""infer.report / infer.published: the listening page, the published results and the chart."""
from __future__ import annotations

import html
import json
import re

import matplotlib.image as mpimg
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cleancodec.cli import main
from cleancodec.core.codec import RANDOM_INIT_BANNER
from cleancodec.core.config import ConfigError
from cleancodec.infer.evaluate import EvaluateConfig, evaluate_dirs
from cleancodec.infer.published import (
    benchmark_names,
    comparison_png,
    load_benchmark,
    note_on_testset,
)
from cleancodec.infer.report import (
    REPORT_DIR,
    REPORT_NAME,
    select_entries,
    slug,
    spectrogram_pngs,
)
from cleancodec.infer.run import REPORT_NAME as DENOISE_REPORT
from tests.helpers import SR, write_eval_folders

FAST = dict(metrics=["si_sdr"], workers=1, spectrograms=0)  # no model-based metric: quick


# --- published results ------------------------------------------------------------------------


def test_every_published_number_names_its_paper_and_table():
    assert {"dns2020-no-reverb", "voicebank"} <= set(benchmark_names())
    for name in benchmark_names():
        bench = load_benchmark(name)
        assert bench.systems and bench.n_files > 0 and bench.testset_reference
        for s in bench.systems:
            ref = s.reference
            assert ref["authors"] and ref["title"] and ref["venue"] and int(ref["year"]) > 2000
            assert s.table and set(s.scores) <= set(bench.metrics), (name, s.name)
            citation = s.citation()
            assert ref["title"] in citation and s.table in citation
            assert ("not checked" in citation) == (not s.checked)
    dns = {s.name: s.scores for s in load_benchmark("dns2020-no-reverb").systems}
    assert dns["Clean Before You Code (Large)"]["dnsmos_ovrl"] == pytest.approx(3.420)
    assert dns["Noisy"] == {"dnsmos_sig": 3.39, "dnsmos_bak": 2.62, "dnsmos_ovrl": 2.48}
    vb = {s.name: s.scores for s in load_benchmark("voicebank").systems}
    assert vb["SEMamba"]["pesq"] == pytest.approx(3.55) and vb["MP-SENet"]["csig"] == 4.73


def test_unknown_benchmark_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="voicebank"):
        load_benchmark("dns2099")
    with pytest.raises(ConfigError, match="evaluate.compare"):
        EvaluateConfig(compare="dns2099")


def test_note_on_testset_says_whose_set_it_is():
    bench = load_benchmark("dns2020-no-reverb")
    note = note_on_testset(bench, False, 150)
    assert "yours" in note and "not the DNS 2020" in note
    assert "but 12 files" in note_on_testset(bench, True, 12)
    assert "yours" not in note_on_testset(bench, True, bench.n_files)


def test_comparison_chart_is_a_png_with_and_without_own_scores():
    bench = load_benchmark("voicebank")
    stats = {"enhanced": {"pesq": {"mean": 2.9, "ci95": 0.1, "n": 9}},
             "noisy": {"pesq": {"mean": 1.9, "ci95": None, "n": 9}}}
    for s in (stats, {}):
        png = comparison_png(bench, s, 9, banner=RANDOM_INIT_BANNER)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


# --- choosing the files and the spectrograms --------------------------------------------------


def _rows(n):
    return [{"file": f"f{i}.wav", "enhanced_pesq": float(i)} for i in range(n)]


def test_small_sets_show_every_file_worst_first_and_large_ones_worst_median_best():
    rows = _rows(5) + [{"file": "broken.wav", "error": "unreadable"}]
    picked = select_entries(rows[::-1], 2, "enhanced_pesq")
    assert [e.row["file"] for e in picked] == [f"f{i}.wav" for i in range(5)] + ["broken.wav"]
    assert {e.group for e in picked} == {""}
    picked = select_entries(_rows(20), 2, "enhanced_pesq")
    groups = {g: [e.row["enhanced_pesq"] for e in picked if e.group == g]
              for g in ("worst", "median", "best")}
    assert groups == {"worst": [0.0, 1.0], "median": [9.0, 10.0], "best": [18.0, 19.0]}


def test_slugs_are_safe_names():
    assert re.fullmatch(r"[A-Za-z0-9._-]+", slug("a/b c/ü&x.wav"))
    assert slug("x/y.wav") != slug("x_y.wav")


def test_a_files_spectrograms_share_one_colour_scale():
    loud = (0.3 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    pngs = spectrogram_pngs({"loud": loud, "quiet": 0.01 * loud}, 512, 128, 80.0)
    alone = spectrogram_pngs({"quiet": 0.01 * loud}, 512, 128, 80.0)

    def brightness(png):
        import io

        return float(mpimg.imread(io.BytesIO(png))[..., :3].mean())

    # on the shared scale the quiet copy is 40 dB darker; on its own scale it would not be
    assert brightness(pngs["quiet"]) < brightness(pngs["loud"]) - 0.2
    assert brightness(alone["quiet"]) == pytest.approx(brightness(pngs["loud"]), abs=0.02)


# --- the page ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_eval_folders(tmp_path_factory.mktemp("sets"), 4)


def test_evaluate_writes_a_self_contained_report_with_players_and_media_beside_it(folders,
                                                                               tmp_path):
    (folders / "enhanced" / DENOISE_REPORT).write_text(json.dumps({"warning": "random"}))
    try:
        result = evaluate_dirs(folders / "enhanced", tmp_path, clean=folders / "clean",
                               noisy=folders / "noisy", codec_alone=folders / "codec",
                               cfg=EvaluateConfig(**FAST, compare="dns2020-no-reverb"),
                               progress=False)
    finally:
        (folders / "enhanced" / DENOISE_REPORT).unlink()
    page = (tmp_path / REPORT_NAME).read_text()
    assert result.paths["report"] == tmp_path / REPORT_NAME
    assert html.escape(RANDOM_INIT_BANNER) in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page must not load remotely"
    assert "base64" not in page
    files = re.findall(r'<tbody class=entry data-file="([^"]+)"', page)
    assert files == ["clip3.wav", "clip2.wav", "clip1.wav", "clip0.wav"]  # worst first
    audio = re.findall(r'<audio controls preload="none" src="([^"]+)"', page)
    images = re.findall(r'<img loading="lazy" alt="[^"]*" src="([^"]+)"', page)
    assert len(audio) == 4 * 4 and len(images) == 4 * 4 + 1  # 4 signals x 4 files + the chart
    for rel in audio + images:
        assert (tmp_path / rel).is_file(), rel
        assert rel.startswith(f"{REPORT_DIR}/") or rel.startswith("compare_")
    wave, rate = sf.read(tmp_path / audio[0])
    assert rate == SR and wave.ndim == 1
    assert "compare_dns2020-no-reverb.png" in page and "Interspeech" in page
    assert 'data-default-sort="enhanced_si_sdr"' in page  # no PESQ / OVRL: the first metric


def test_cli_options_reach_the_report_and_the_chart(folders, tmp_path):
    out = tmp_path / "eval"
    res = CliRunner().invoke(main, [
        "evaluate", "--enhanced", str(folders / "enhanced"), "--clean", str(folders / "clean"),
        "--out", str(out), "--quiet", "--compare", "voicebank", "--same-testset",
        "--report-files", "1", "evaluate.metrics=[si_sdr]", "evaluate.workers=1",
        "evaluate.spectrograms=0"])
    assert res.exit_code == 0, res.output
    assert f"report: {out / REPORT_NAME}" in res.output
    assert (out / "compare_voicebank.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["same_testset"] is True and summary["config"]["report_files"] == 1
    res = CliRunner().invoke(main, [
        "evaluate", "--enhanced", str(folders / "enhanced"), "--out", str(tmp_path / "none"),
        "--quiet", "--no-report", "evaluate.metrics=[si_sdr]", "evaluate.workers=1"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "none" / REPORT_NAME).exists()
