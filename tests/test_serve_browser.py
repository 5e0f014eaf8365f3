"""``cleancodec serve`` in a real headless Chromium (Debian's /usr/bin/chromium via Playwright):
upload a WAV, denoise, download, and compare with ``cleancodec denoise``; a non-audio upload
shows its error in the page.

Screenshots go to the test's tmp folder, and to docs/img/serve.png when
``CLEANCODEC_DOC_SCREENSHOTS=1``.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("gradio", reason="the app's extra is not installed (pip install -e '.[serve]')")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install playwright)")

from cleancodec.core.codec import RANDOM_INIT_BANNER, load_codec  # noqa: E402
from cleancodec.infer.denoise import snr_db  # noqa: E402
from cleancodec.infer.run import run_denoise  # noqa: E402
from tests.helpers import (  # noqa: E402
    REPO,
    SR,
    TINY_CODEC,
    TINY_PROFILE,
    local_denoiser,
    save_checkpoint,
    speechlike,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
START_TIMEOUT_S = 120.0  # the server imports torch and gradio and loads the models
RESULT_TIMEOUT_MS = 120_000
SAME_DB = 90.0
DOC_SCREENSHOT = REPO / "docs" / "img" / "serve.png"
DOC_ENV = "CLEANCODEC_DOC_SCREENSHOTS"
VIEWPORT = {"width": 1280, "height": 900}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, log: Path) -> None:
    """Poll ``url`` until it answers; fail with the server's log when it exits or hangs."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"cleancodec serve exited ({server.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"cleancodec serve did not answer within {START_TIMEOUT_S:.0f} s:\n"
                f"{log.read_text()}")


@pytest.fixture
def inputs(tmp_path):
    """A tiny run's checkpoint, a noisy WAV and a text file named like a WAV."""
    codec = load_codec(TINY_CODEC)
    checkpoint = save_checkpoint(tmp_path / "runs" / "tiny" / "best.pt", local_denoiser(codec),
                                 codec.identity)
    rng = np.random.default_rng(0)
    x = speechlike(2.0, seed=5)
    noisy = tmp_path / "noisy.wav"
    sf.write(noisy, np.clip(x + 0.05 * rng.standard_normal(x.shape), -1, 1), SR)
    text = tmp_path / "notes.wav"
    text.write_text("these are notes, not audio\n")
    return checkpoint, noisy, text


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing (apt-get install "
                                                  "chromium)")
def test_denoise_in_the_browser_equals_the_command_line(inputs, tmp_path):
    checkpoint, noisy, text = inputs
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "server.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "cleancodec", "serve", "--conf", TINY_PROFILE,
             "--codec", "random", "--checkpoint", str(checkpoint), "--port", str(port),
             f"denoise.runs_dir={tmp_path / 'runs'}"],
            cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        # the command line's output, made while the server starts
        reference = tmp_path / "cli.wav"
        summary, _ = run_denoise(noisy, reference, TINY_PROFILE,
                                 ["codec.weights=random", f"denoise.checkpoint='{checkpoint}'"],
                                 progress=False)
        assert not summary.failed
        wait_until_up(url, server, log)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(accept_downloads=True, viewport=VIEWPORT)
                page.goto(url)
                page.wait_for_selector("#denoise")
                sync_api.expect(page.locator("#random-banner")).to_contain_text(
                    RANDOM_INIT_BANNER[:40])

                # not audio: the reason shows in the page
                page.locator("#noisy input[type=file]").set_input_files(str(text))
                page.click("#denoise")
                sync_api.expect(page.get_by_text("notes.wav: not a readable audio file")) \
                    .to_be_visible(timeout=RESULT_TIMEOUT_MS)
                page.screenshot(path=str(tmp_path / "serve_error.png"), full_page=True)

                # a WAV: denoise, wait for the scores, download
                page.reload()
                page.wait_for_selector("#denoise")
                page.locator("#noisy input[type=file]").set_input_files(str(noisy))
                page.click("#denoise")
                sync_api.expect(page.locator("#scores")).to_contain_text(
                    "codec alone", timeout=RESULT_TIMEOUT_MS)
                sync_api.expect(page.locator("#spectrogram img")).to_be_visible(
                    timeout=RESULT_TIMEOUT_MS)
                page.get_by_role("tab", name="Live microphone").click()
                sync_api.expect(page.locator("#live-timing")).to_contain_text(
                    "real-time factor", timeout=RESULT_TIMEOUT_MS)
                page.get_by_role("tab", name="Denoise a file").click()
                with page.expect_download() as download:
                    page.click("#download")
                got = tmp_path / "downloaded.wav"
                download.value.save_as(got)
                shot = tmp_path / "serve.png"
                page.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    a, sr_a = sf.read(got, always_2d=True)
    b, sr_b = sf.read(reference, always_2d=True)
    assert sr_a == sr_b == SR and a.shape == b.shape
    assert snr_db(b, a) >= SAME_DB
    if os.environ.get(DOC_ENV) == "1":
        DOC_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOC_SCREENSHOT)
