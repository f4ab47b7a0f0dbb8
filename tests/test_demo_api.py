"""Public functions added for the web demo: classical codecs at a file size, and the
progress callback of encode_video."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import codec
from codec.eval.codecs import image_codec


@pytest.fixture(scope="module")
def photo(example_image) -> np.ndarray:
    return np.asarray(Image.open(example_image).convert("RGB"))[:128, 256:448]


def test_classical_gives_the_largest_file_within_the_budget(photo):
    jpeg = image_codec("jpeg")
    budget = len(jpeg.encode(photo, 50))
    r = codec.encode_classical(photo, "jpeg", budget)
    assert r["fits"] and len(r["data"]) <= budget and r["setting"] >= 50
    assert len(jpeg.encode(photo, r["setting"] + 1)) > budget
    assert r["decoded"].shape == photo.shape


def test_classical_below_its_smallest_file_says_so(photo):
    r = codec.encode_classical(photo, "webp", 10)
    assert not r["fits"] and r["setting"] == 0


def test_x264_at_a_size_searches_crf_downwards():
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (1, 32, 48, 3), dtype=np.uint8), 3, axis=0)
    loose = codec.encode_classical(frames, "x264", 10**9)
    assert loose["fits"] and loose["setting"] == 0 and loose["decoded"].shape == frames.shape
    budget = len(loose["data"]) // 2
    r = codec.encode_classical(frames, "x264", budget)
    assert r["fits"] and len(r["data"]) <= budget and r["setting"] > 0


def test_unknown_codec_is_refused(photo):
    with pytest.raises(codec.NeurocodecError, match="jpeg"):
        codec.encode_classical(photo, "gif", 1000)


def test_encode_video_reports_progress(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"f{i}.png")
    calls = []
    codec.encode_video(tmp_path, epochs=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_demo_reads_no_path_outside_its_folder(tmp_path):
    import gradio as gr

    from gui.app import _Workspace

    inside = tmp_path / "ws" / "upload.png"
    inside.parent.mkdir()
    inside.write_bytes(b"x")
    ws = _Workspace(tmp_path / "ws")
    assert ws.check(str(inside), "image") == inside.resolve()
    for path in ["/etc/passwd", str(tmp_path / "ws" / ".." / "secret"), str(tmp_path / "ws"), ""]:
        with pytest.raises(gr.Error):
            ws.check(path, "image")
