"""report.html in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

The page is opened from ``file://`` as a user would open it: no console error, every player
loads and plays its file, a click on a header sorts the files, the box filters them. Screenshots
go to the test's folder, and to ``docs/img/report.png`` when CLEANCODEC_DOC_SCREENSHOTS=1.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install -e '.[browser]')")

from cleancodec.infer.evaluate import EvaluateConfig, evaluate_dirs  # noqa: E402
from cleancodec.infer.report import REPORT_NAME  # noqa: E402
from tests.helpers import REPO, write_eval_folders  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
DOC_SCREENSHOT = REPO / "docs" / "img" / "report.png"
DOC_ENV = "CLEANCODEC_DOC_SCREENSHOTS"
DOC_COLOURS = 128
VIEWPORT = {"width": 1400, "height": 1000}
FILES = 4
MEDIA_TIMEOUT_MS = 10_000

LOAD_AND_PLAY = """async (audio) => {
  const ready = new Promise((resolve, reject) => {
    audio.addEventListener('loadedmetadata', resolve, {once: true});
    audio.addEventListener('error', () => reject(new Error('cannot load ' + audio.src)),
                           {once: true});
  });
  audio.load();
  await ready;
  const loaded = audio.readyState;
  audio.muted = true;
  await audio.play();
  const playing = !audio.paused;
  audio.pause();
  audio.muted = false;
  return {loaded, playing, duration: audio.duration};
}"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """An evaluation of FILES short clips with codec-alone copies and the DNS comparison."""
    sets = write_eval_folders(tmp_path_factory.mktemp("sets"), FILES, seconds=1.5)
    out = tmp_path_factory.mktemp("eval")
    evaluate_dirs(sets / "enhanced", out, clean=sets / "clean", noisy=sets / "noisy",
                  codec_alone=sets / "codec", progress=False,
                  cfg=EvaluateConfig(metrics=["pesq", "stoi", "si_sdr"], workers=1,
                                     spectrograms=0, compare="dns2020-no-reverb"))
    return out / REPORT_NAME


def _order(page) -> list[str]:
    return page.eval_on_selector_all("tbody.entry", "els => els.map(e => e.dataset.file)")


def _visible(page) -> list[str]:
    return page.eval_on_selector_all(
        "tbody.entry", "els => els.filter(e => !e.hidden).map(e => e.dataset.file)")


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing (apt-get install "
                                                  "chromium)")
def test_report_loads_plays_sorts_and_filters_in_chromium(report, tmp_path):
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")

            # worst first by enhanced PESQ: the clip with most leftover noise on top
            worst_first = _order(page)
            assert sorted(worst_first) == [f"clip{i}.wav" for i in range(FILES)]
            assert page.get_attribute("table.files", "data-default-sort") == "enhanced_pesq"
            pesq = [float(v) for v in page.eval_on_selector_all(
                "tbody.entry", "els => els.map(e => e.dataset.enhancedPesq)")]
            assert pesq == sorted(pesq)

            audios = page.query_selector_all("audio")
            assert len(audios) == FILES * 4  # noisy, enhanced, codec alone, clean
            assert all(a.get_attribute("preload") == "none" for a in audios)
            for audio in audios:
                state = audio.evaluate(LOAD_AND_PLAY)
                assert state["loaded"] >= 1 and state["playing"], (audio.get_attribute("src"),
                                                                    state)
                assert state["duration"] == pytest.approx(1.5, abs=0.05)
            images = page.query_selector_all("img")
            assert images and all(i.get_attribute("loading") == "lazy" for i in images)
            page.screenshot(path=str(tmp_path / "report-top.png"))
            page.locator("h2", has_text="Files").scroll_into_view_if_needed()
            page.evaluate("document.querySelector('#filter').closest('p').previousElementSibling"
                          ".scrollIntoView()")
            page.wait_for_function("[...document.querySelectorAll('tbody.entry img')].slice(0, 8)"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(tmp_path / "report.png"))

            # click SI-SDR: ascending by it; again: descending
            header = page.locator("table.files thead th", has_text="SI-SDR").first
            header.click()
            sdr = [float(v) for v in page.eval_on_selector_all(
                "tbody.entry", "els => els.map(e => e.dataset.enhancedSiSdr)")]
            assert sdr == sorted(sdr)
            header.click()
            sdr_desc = [float(v) for v in page.eval_on_selector_all(
                "tbody.entry", "els => els.map(e => e.dataset.enhancedSiSdr)")]
            assert sdr_desc == sorted(sdr, reverse=True)
            page.locator("table.files thead th", has_text="file").first.click()
            assert _order(page) == sorted(worst_first)

            page.fill("#filter", "clip2")
            assert _visible(page) == ["clip2.wav"]
            assert page.inner_text("#shown") == "1"
            assert not page.is_visible("tbody.entry[data-file='clip1.wav'] audio")
            page.screenshot(path=str(tmp_path / "report-filtered.png"))
            page.fill("#filter", "")
            assert len(_visible(page)) == FILES
        finally:
            browser.close()
    assert not errors, errors
    assert (tmp_path / "report.png").stat().st_size > 10_000
    if os.environ.get(DOC_ENV) == "1":  # a palette PNG keeps the repository small
        from PIL import Image

        DOC_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(tmp_path / "report.png") as shot:
            shot.convert("RGB").quantize(DOC_COLOURS).save(DOC_SCREENSHOT, optimize=True)
