"""The web demo end to end: a real `neurocodec demo` server, driven through its API by
gradio_client and through its page by headless Chromium (Playwright with the system browser).

The browser test fails when Chromium is missing (CI installs Debian's `chromium`, see .ci/run);
NEUROCODEC_SKIP_BROWSER=1 skips it. NEUROCODEC_SCREENSHOT=docs/demo.png also saves its
screenshot there (how the README's picture is made).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import codec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "kodim23.png"
MODEL = "hyperprior-small"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """URL of a demo server of our own, with its own TMPDIR, checked empty after shutdown."""
    tmp = tmp_path_factory.mktemp("demo-tmpdir")
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tmp_path_factory.mktemp("demo-log") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "codec.cli", "demo", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"demo server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    left = [p for p in tmp.rglob("*") if p.is_file()]  # (Gradio and torch make empty folders on import)
    assert left == [], "the demo left temporary files behind"


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    import tempfile

    from gradio_client import Client

    # gradio_client leaves an empty folder in the temp dir per download: keep them in pytest's
    saved, tempfile.tempdir = tempfile.tempdir, str(tmp_path_factory.mktemp("client-tmp"))
    yield Client(server, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    tempfile.tempdir = saved


@pytest.fixture(scope="module")
def compressed(client):
    """(metrics, .ncf path) of the example image compressed through /compress_image."""
    from gradio_client import handle_file

    _slider, _crop, metrics, ncf = client.predict(handle_file(EXAMPLE), MODEL, 3.0, api_name="/compress_image")
    return metrics, Path(ncf)


def test_compress_shows_the_numbers_of_the_file(compressed):
    metrics, ncf = compressed
    data = ncf.read_bytes()
    original = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    decoded = codec.decode_image(data)
    h, w = original.shape[:2]
    assert decoded.shape == original.shape
    assert metrics["file size (bytes)"] == len(data)
    assert metrics["bpp"] == round(8 * len(data) / (w * h), 4)
    assert metrics["PSNR (dB)"] == round(codec.psnr(original, decoded), 2)
    assert metrics["MS-SSIM"] == round(codec.ms_ssim(original, decoded), 4)
    assert codec.read_info(data)["model"] == MODEL


def test_compare_at_the_same_size(client, compressed):
    from gradio_client import handle_file

    _metrics, ncf = compressed
    size = ncf.stat().st_size
    _gallery, table = client.predict(handle_file(EXAMPLE), handle_file(ncf), api_name="/compare_image")
    rows = {r[0].split()[0]: r for r in table["data"]}
    assert rows["neurocodec"][1] == size
    for name in ("jpeg", "webp"):
        assert 0.5 * size < rows[name][1] <= size, rows[name]


def test_decode_tab_shows_image_and_header(client, compressed):
    from gradio_client import handle_file

    _metrics, ncf = compressed
    _image, _video, header = client.predict(handle_file(ncf), api_name="/decode_file")
    assert header["bytes"] == ncf.stat().st_size
    assert (header["media"], header["model"], header["width"], header["height"]) == ("image", MODEL, 768, 512)


def test_errors_are_readable_messages(client, tmp_path):
    from gradio_client import handle_file

    junk = tmp_path / "junk.ncf"
    junk.write_bytes(b"not an ncf file at all")
    with pytest.raises(Exception) as err:
        client.predict(handle_file(junk), api_name="/decode_file")
    message = str(err.value)
    assert "magic" in message.lower() or "ncf" in message.lower(), message
    assert "Traceback" not in message


def test_video_encode_beside_x264(client, tmp_path):
    from gradio_client import handle_file

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, 2 * i, axis=1) for i in range(4)])
    clip = tmp_path / "clip.mp4"
    codec.write_frames(frames, clip, fps=10)
    video, metrics, ncf = client.predict(handle_file(clip), 6.0, 4, 5, api_name="/encode_video")
    data = Path(ncf).read_bytes()
    assert metrics["frames"] == 4 and metrics["size"] == "64x48"
    assert metrics["neurocodec"]["file size (bytes)"] == len(data)
    assert metrics["neurocodec"]["bpp"] == round(8 * len(data) / (4 * 64 * 48), 4)
    assert codec.decode_video(data).shape == (4, 48, 64, 3)
    assert Path(video).stat().st_size > 0


def test_browser_compresses_the_example(server, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("NEUROCODEC_SKIP_BROWSER") == "1":
            pytest.skip("NEUROCODEC_SKIP_BROWSER=1 and no chromium")
        pytest.fail("the browser test needs Debian's chromium (apt-get install chromium); "
                    "set NEUROCODEC_SKIP_BROWSER=1 to skip it")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1024, "height": 800})
            page.goto(server)
            page.locator("#image-in input[type=file]").set_input_files(str(EXAMPLE))
            page.locator("#compress").click()
            metrics = page.locator("#image-metrics")
            expect(metrics).to_contain_text("PSNR", timeout=120_000)
            for text in ("bpp", "MS-SSIM", "file size", "encode time"):
                expect(metrics).to_contain_text(text)
            shot = tmp_path / "demo.png"
            page.evaluate("window.scrollTo(0, 0)")
            box = metrics.bounding_box()  # the page down to the metrics
            page.screenshot(path=str(shot), full_page=True,
                            clip={"x": 0, "y": 0, "width": 1024, "height": box["y"] + box["height"] + 16})
        finally:
            browser.close()
    assert shot.stat().st_size > 0
    if target := os.environ.get("NEUROCODEC_SCREENSHOT"):  # 256 colours keep the README's copy small
        Image.open(shot).convert("RGB").quantize(256).save(target, optimize=True)
