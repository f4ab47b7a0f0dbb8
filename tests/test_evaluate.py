"""Tests of the rate-distortion evaluation (codec.eval: metrics, codecs, sweep, bd, report; the eval CLI)."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import codec
from codec.cli import evaluate as cli_eval
from codec.eval import codecs as ec
from codec.eval import metrics, report
from codec.eval import sweep as ev
from codec.eval.bd import bd_psnr, bd_rate, bd_table

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kodim23.png"
# the full Kodak set, for the slow test only (not shipped with the repository)
KODAK = Path(os.environ.get("NEUROCODEC_KODAK", "/nonexistent"))

QUIET = lambda m: None  # noqa: E731


# --------------------------------------------------------------------------- BD


RATES = [0.1, 0.25, 0.5, 1.0, 2.0]
PSNRS = [27.0, 30.0, 33.0, 36.5, 40.0]


def test_bd_rate_identical_curves_is_zero():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_ten_percent_fewer_bits():
    fewer = [r * 0.9 for r in RATES]
    assert bd_rate(RATES, PSNRS, fewer, PSNRS) == pytest.approx(-10.0, abs=1e-9)
    more = [r * 1.25 for r in RATES]
    assert bd_rate(RATES, PSNRS, more, PSNRS) == pytest.approx(25.0, abs=1e-9)


def test_bd_psnr_constant_shift_and_order_independence():
    better = [p + 1.0 for p in PSNRS]
    assert bd_psnr(RATES, PSNRS, RATES, better) == pytest.approx(1.0, abs=1e-9)
    # unsorted input gives the same answer
    idx = [3, 0, 4, 1, 2]
    r2 = [RATES[i] * 0.8 for i in idx]
    p2 = [PSNRS[i] for i in idx]
    assert bd_rate(RATES, PSNRS, r2, p2) == pytest.approx(-20.0, abs=1e-9)


def test_bd_rate_partial_overlap_and_no_overlap():
    # test curve only covers the upper half of the anchor's quality range, 10 % fewer bits;
    # log-rate linear in PSNR, which PCHIP reproduces exactly with any subset of points
    q = [28.0, 30.0, 32.0, 34.0, 36.0]
    r = [0.2 * 10 ** ((x - 28) / 10) for x in q]
    assert bd_rate(r, q, [x * 0.9 for x in r[2:]], q[2:]) == pytest.approx(-10.0)
    assert math.isnan(bd_rate(RATES, PSNRS, [5, 6], [50, 51]))
    assert math.isnan(bd_rate(RATES, PSNRS, [1.0], [30.0]))


def test_bd_rate_matches_reference_formula_on_a_curved_case():
    # PCHIP on straight lines in (psnr, log10 rate) is exact: anchor log-rate slope 1/10 dB,
    # test slope 1/12 dB, both through (30 dB, 0.5 bpp); closed form of the mean difference.
    q = np.linspace(28, 38, 6)
    ra = 0.5 * 10 ** ((q - 30) / 10)
    rt = 0.5 * 10 ** ((q - 30) / 12)
    d = np.mean([(x - 30) / 12 - (x - 30) / 10 for x in np.linspace(28, 38, 100001)])
    assert bd_rate(ra, q, rt, q) == pytest.approx((10 ** d - 1) * 100, rel=1e-4)


# --------------------------------------------------------------------------- metrics


def test_psnr_and_ms_ssim_basic():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    assert metrics.psnr(a, a) == math.inf
    b = np.clip(a.astype(int) + 4, 0, 255).astype(np.uint8)
    assert 35 < metrics.psnr(a, b) < 37
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0)
    assert 0 < metrics.ms_ssim(a, b) < 1


def test_ms_ssim_with_fewer_scales_is_pytorch_msssims_algorithm():
    """Built on pytorch-msssim's public `ssim`: with all five weights it gives `ms_ssim`'s value."""
    import torch
    from pytorch_msssim import ms_ssim

    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.integers(0, 256, (1, 3, 200, 240)).astype(np.float32))
    y = (x + torch.from_numpy(rng.integers(-20, 21, x.shape).astype(np.float32))).clamp(0, 255)
    weights = torch.tensor(metrics.MS_SSIM_WEIGHTS)
    assert float(metrics._ms_ssim_levels(x, y, weights)) == pytest.approx(float(ms_ssim(x, y, data_range=255.0)),
                                                                          abs=1e-6)


@pytest.mark.parametrize("box, expected", [((0, 0, 50, 40), 0.9955189824104309), ((200, 100, 290, 200), 0.9959128499031067),
                                           ((400, 300, 570, 450), 0.9901617169380188), ((10, 10, 40, 31), 0.9958069920539856)])
def test_ms_ssim_of_small_images_unchanged(box, expected):
    """The values of the implementation on pytorch-msssim's private `_ssim` (before 2026-12-07)."""
    a = Image.open(EXAMPLE).convert("RGB").crop(box)
    b = a.resize((a.width // 2, a.height // 2)).resize(a.size, Image.BILINEAR)
    assert metrics.ms_ssim(np.asarray(a), np.asarray(b)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("shape", [(160, 200), (100, 90), (48, 64), (16, 16), (5, 7)])
def test_ms_ssim_small_images(shape):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-8, 9, a.shape), 0, 255).astype(np.uint8)
    v = metrics.ms_ssim(a, b)
    assert 0 < v < 1
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0)


def test_y_psnr():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[..., 0] = 10  # R error only: luma error 2.126
    assert metrics.y_psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 2.126**2))


def test_parse_qualities():
    q = ev.parse_qualities(["jpeg=10:30:10", "neurocodec=1,2.5", "5,6"])
    assert q == {"jpeg": [10, 20, 30], "neurocodec": [1.0, 2.5], "*": [5.0, 6.0]}
    assert ev._settings_for("neurocodec:small", [1], q) == [1.0, 2.5]
    assert ev._settings_for("webp", [1], q) == [5.0, 6.0]
    assert ev._settings_for("webp", [1], {}) == [1]


# --------------------------------------------------------------------------- references


def test_shipped_references_load():
    ref = report.load_reference("kodak")
    assert "vtm" in ref["curves"] and "jpeg" in ref["curves"]
    vtm = ref["curves"]["vtm"]
    assert vtm["bpp"] == sorted(vtm["bpp"]) and vtm["ms-ssim"] is not None
    uvg = report.load_reference("uvg")
    assert any("HiNeRV" in k for k in uvg["curves"])
    assert report.load_reference("none")["curves"] == {}


# --------------------------------------------------------------------------- image sweep


@pytest.fixture()
def two_images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    im = Image.open(EXAMPLE).convert("RGB")
    for i in range(2):  # two crops of different sizes
        im.crop((200 + 200 * i, 100, 200 + 200 * i + 176 + 16 * i, 100 + 120)).save(d / f"img{i}.png")
    return d


def test_evaluate_images_two_codecs(two_images, tmp_path):
    out = tmp_path / "r.json"
    res = ev.evaluate_images(
        two_images, ["jpeg", "webp"], qualities={"jpeg": [20, 50, 80], "webp": [20, 50, 80]},
        out=out, csv_path=tmp_path / "r.csv", plot=tmp_path / "rd.png", anchor="jpeg",
        workers=1, reference="kodak", compressai_dir=tmp_path / "cai", log=QUIET)
    data = json.loads(out.read_text())
    cai = json.loads((tmp_path / "cai" / "webp.json").read_text())
    assert cai["name"] == "webp" and cai["results"]["ms-ssim-rgb"] == cai["results"]["ms-ssim"]
    assert data["dataset"] == "imgs"
    names = [c["name"] for c in data["codecs"]]
    assert names == ["jpeg", "webp"]
    for c in data["codecs"]:
        r = c["results"]
        for k in ("bpp", "psnr-rgb", "ms-ssim", "encoding_time", "decoding_time"):
            assert len(r[k]) == 3
        assert r["bpp"] == sorted(r["bpp"])
        assert r["psnr-rgb"] == sorted(r["psnr-rgb"])
        assert len(c["settings"]) == 3 and "quality" in c["settings"][0]
        assert c["library"]["imagecodecs"]
    assert data["codecs"][1]["settings"][0]["method"] == 6
    # bpp is from the real bytes, averaged per image
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert len(rows) == 2 * 3 * 2
    jpeg20 = [r for r in rows if r["codec"] == "jpeg" and r["setting"] == "20"]
    for r in jpeg20:
        assert float(r["bpp"]) == pytest.approx(int(r["bytes"]) * 8 / (int(r["width"]) * int(r["height"])), rel=1e-5)
    assert data["codecs"][0]["results"]["bpp"][0] == pytest.approx(
        np.mean([float(r["bpp"]) for r in jpeg20]), rel=1e-5)
    bd = {r["codec"]: r for r in data["bd"]["rows"]}
    assert bd["jpeg"]["bd_rate_psnr_pct"] == 0.0
    assert bd["webp"]["bd_rate_psnr_pct"] is not None
    assert (tmp_path / "rd.png").stat().st_size > 1000
    assert res["codecs"][0]["name"] == "jpeg"
    # anchor on a published curve
    t = bd_table(res["codecs"], "ref:vtm", report.load_reference("kodak")["curves"])
    assert t["anchor_kind"] == "reference"


def test_cache_resumes(two_images, tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    kw = dict(qualities={"jpeg": [30, 60]}, out=out, workers=1, reference="none", log=QUIET)
    first = ev.evaluate_images(two_images, ["jpeg"], **kw)
    cache = Path(str(out) + ".cache.jsonl")
    assert len(cache.read_text().splitlines()) == 4
    # simulate an interrupted write: a truncated last line is ignored
    with open(cache, "a") as f:
        f.write('{"key": "trunc')

    def boom(task):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(ev, "_image_task", boom)
    second = ev.evaluate_images(two_images, ["jpeg"], **kw)
    assert second["codecs"][0]["results"]["bpp"] == first["codecs"][0]["results"]["bpp"]
    # a new setting is computed, the old ones are reused
    calls = []
    monkeypatch.undo()
    real = ev._image_task

    def counting(task):
        calls.append(task["setting"])
        return real(task)

    monkeypatch.setattr(ev, "_image_task", counting)
    third = ev.evaluate_images(two_images, ["jpeg"], **{**kw, "qualities": {"jpeg": [30, 60, 90]}})
    assert calls == [90, 90]
    assert len(third["codecs"][0]["results"]["bpp"]) == 3


def test_unknown_and_unavailable_codecs_are_skipped(two_images, tmp_path):
    msgs = []
    names = ec.expand_image_codecs(["jpeg", "nosuchcodec"], log=msgs.append)
    assert names == ["jpeg"]
    assert any("nosuchcodec" in m for m in msgs)
    with pytest.raises(ValueError):
        ev.evaluate_images(two_images, ["nosuchcodec"], out=None, log=QUIET)


@pytest.fixture()
def fake_neurocodec(monkeypatch):
    """A stand-in for the public neurocodec API (JPEG inside), to test the adapter."""
    import imagecodecs

    import codec

    def list_models():
        return [
            {"name": "tiny", "kind": "image", "likelihood": "gaussian", "weights_shipped": True,
             "qualities": [1.0, 8.0], "default": True},
            {"name": "unshipped", "kind": "image", "likelihood": "gmm",
             "weights_shipped": False, "qualities": [1.0, 8.0], "default": False},
            {"name": "vid", "kind": "video", "likelihood": "gaussian", "weights_shipped": True,
             "qualities": [1.0, 8.0], "default": False},
        ]

    def encode_image(image, model=None, quality=4.0, threads=None):
        assert model == "tiny" and threads == 1
        return b"NCF" + imagecodecs.jpeg8_encode(np.asarray(image), level=int(quality * 11))

    def decode_image(data, threads=None):
        assert threads == 1
        return imagecodecs.jpeg8_decode(data[3:])

    monkeypatch.setattr(codec, "list_models", list_models, raising=False)
    monkeypatch.setattr(codec, "encode_image", encode_image, raising=False)
    monkeypatch.setattr(codec, "decode_image", decode_image, raising=False)


def test_neurocodec_adapter_expands_shipped_models(fake_neurocodec, two_images, tmp_path):
    assert ec.expand_image_codecs(["neurocodec", "jpeg"], log=QUIET) == ["neurocodec:tiny", "jpeg"]
    msgs = []
    assert ec.expand_image_codecs(["neurocodec:unshipped"], log=msgs.append) == []
    assert "no weights shipped" in msgs[0]
    res = ev.evaluate_images(two_images, ["neurocodec", "jpeg"],
                             qualities={"neurocodec": [2, 5, 8], "jpeg": [20, 50, 80]},
                             out=tmp_path / "n.json", workers=1, reference="none",
                             anchor="jpeg", log=QUIET, cache=False)
    nc = res["codecs"][0]
    assert nc["name"] == "neurocodec:tiny"
    assert nc["settings"][0] == {"quality": 2.0, "model": "tiny", "likelihood": "gaussian"}
    assert len(nc["results"]["bpp"]) == 3
    # bpp counts the real bytes including the 3-byte stand-in header
    assert nc["results"]["bpp"][0] > 0


def test_shipped_neurocodec_models(two_images, tmp_path):
    names = ec.expand_image_codecs(["neurocodec"], log=QUIET)
    shipped = [f"neurocodec:{m['name']}" for m in codec.list_models() if m["weights_shipped"] and m["kind"] == "image"]
    assert names == shipped and "neurocodec:hyperprior-small" in names  # weights/ ships with the repository
    res = ev.evaluate_images(two_images, [names[0]], qualities={"neurocodec": [1, 8]},
                             limit=1, out=tmp_path / "s.json", workers=1, reference="none",
                             log=QUIET, cache=False)
    c = res["codecs"][0]
    r = c["results"]
    assert r["bpp"][0] < r["bpp"][1] and r["psnr-rgb"][0] < r["psnr-rgb"][1]
    assert c["settings"][0]["model"] == names[0].split(":", 1)[1]


# --------------------------------------------------------------------------- CLI


def test_register_cli_parses(tmp_path):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_eval.add_parser(sub)
    a = parser.parse_args(["eval", "images", "dir", "--codecs", "jpeg,webp", "--qualities",
                           "jpeg=10:90:40", "--out", "r.json", "--workers", "1",
                           "--reference", "none"])
    assert a.func is cli_eval._cmd_images and a.codecs == ["jpeg", "webp"] and a.workers == 1
    v = parser.parse_args(["eval", "video", "f.mp4", "--codecs", "x264", "--frames", "5",
                           "--size", "64x48", "--out", "v.json", "--plot", "v.png"])
    assert v.func is cli_eval._cmd_video and v.size == (64, 48) and v.frames == 5


def test_cli_images_end_to_end(two_images, tmp_path):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_eval.add_parser(sub)
    a = parser.parse_args(["eval", "images", str(two_images), "--codecs", "jpeg",
                           "--qualities", "jpeg=30,70", "--out", str(tmp_path / "c.json"),
                           "--workers", "1", "--reference", "none", "--cache", "none"])
    assert a.func(a) == 0
    assert json.loads((tmp_path / "c.json").read_text())["codecs"][0]["name"] == "jpeg"


# --------------------------------------------------------------------------- video


def _write_clip(path, n=6, w=64, h=48):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "0", "preset": "ultrafast"}
        y, x = np.mgrid[0:h, 0:w]
        for i in range(n):
            rgb = np.stack([(x * 4 + i * 8) % 256, (y * 5) % 256, (x + y + i * 3) % 256], -1)
            f = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def test_evaluate_video_x264(tmp_path):
    clip = tmp_path / "clip.mp4"
    _write_clip(clip)
    msgs = []
    res = ev.evaluate_video(clip, ["x264", "neurocodec"], frames=4, size=(48, 32),
                            qualities={"x264": [20, 40], "neurocodec": [4]}, epochs=1,
                            out=tmp_path / "v.json",
                            csv_path=tmp_path / "v.csv", plot=tmp_path / "v.png",
                            workers=1, log=msgs.append)
    (c,) = [c for c in res["codecs"] if c["name"] == "x264"]
    r = c["results"]
    assert len(r["bpp"]) == 2 and r["bpp"][0] < r["bpp"][1]
    assert len(r["psnr-y"]) == 2 and r["psnr-rgb"][1] > r["psnr-rgb"][0]
    assert c["settings"][0]["preset"] == "medium" and c["settings"][0]["encoder"] == "libx264"
    assert res["video"]["frames"] == 4 and res["video"]["width"] == 48
    rows = [r for r in csv.DictReader(open(tmp_path / "v.csv")) if r["codec"] == "x264"]
    assert len(rows) == 2
    for row in rows:
        assert float(row["bpp"]) == pytest.approx(int(row["bytes"]) * 8 / (48 * 32 * 4), rel=1e-5)
    # the INR video codec: measured on the same frames, settings recorded
    (nc,) = [c for c in res["codecs"] if c["name"] == "neurocodec"]
    assert nc["settings"][0]["epochs"] == 1 and len(nc["results"]["bpp"]) == 1
    assert nc["results"]["bpp"][0] > 0 and nc["results"]["psnr-rgb"][0] > 10
    assert not any("skipping" in m for m in msgs)


def test_video_preset_reaches_encoder_and_settings(tmp_path):
    pytest.importorskip("av")
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
    # x264 writes its options into the stream (SEI): veryslow = umh search, subme 10
    slow = ec.video_codec("x264", 1, None, "veryslow").encode(frames, 30)
    assert b"me=umh" in slow and b"subme=10" in slow
    assert b"me=hex" in ec.video_codec("x264").encode(frames, 30)  # default: medium
    clip = tmp_path / "clip.mp4"
    _write_clip(clip, n=3)
    res = ev.evaluate_video(clip, ["x264"], qualities={"x264": [30]},
                            presets={"X264": "veryslow"}, out=tmp_path / "v.json",
                            workers=1, log=QUIET)
    (c,) = res["codecs"]
    assert c["settings"][0]["preset"] == "veryslow" and "veryslow" in c["description"]
    rows = [json.loads(line) for line in open(tmp_path / "v.json.cache.jsonl")]
    assert rows[0]["settings"]["preset"] == "veryslow"
    with pytest.raises(ValueError, match="preset"):
        ev.evaluate_video(clip, ["x264"], presets={"neurocodec": "fast"}, cache=None,
                          workers=1, log=QUIET)
    parser = argparse.ArgumentParser()
    cli_eval.add_parser(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["eval", "video", "f.mp4", "--out", "v.json",
                           "--preset", "x264=veryslow,x265=slow"])
    assert a.preset == {"x264": "veryslow", "x265": "slow"}
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "video", "f.mp4", "--out", "v.json", "--preset", "x264"])


def test_video_adapters_report_missing_encoders(monkeypatch):
    import av

    assert ec.video_codec("x264").library["av"] == av.__version__  # PyAV's wheels ship libx264
    real = av.codec.Codec

    def without_x265(name, mode="r"):
        if name == "libx265":
            raise av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    monkeypatch.setattr(av.codec, "Codec", without_x265)
    with pytest.raises(ec.CodecUnavailable, match="x265: this PyAV build .* has no libx265 encoder"):
        ec.video_codec("x265", 3)  # not cached: other arguments than any call before
    msgs = []
    assert ec.expand_video_codecs(["x265", "x264"], 3, log=msgs.append) == ["x264"]
    assert msgs == [m for m in msgs if "x265" in m] and len(msgs) == 1


# --------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_kodak_subset_all_classical_codecs(tmp_path):
    if not KODAK.is_dir():
        pytest.skip("set NEUROCODEC_KODAK to a folder of the 24 Kodak images")
    res = ev.evaluate_images(
        KODAK, ["jpeg", "webp", "avif", "jpegxl", "jpeg2000", "neurocodec"], limit=3,
        qualities={"jpeg": [10, 30, 50, 75, 90], "webp": [10, 30, 50, 75, 90],
                   "avif": [20, 40, 60, 75, 90], "jpegxl": [10, 30, 50, 75, 90],
                   "jpeg2000": [25, 30, 35, 40, 45], "neurocodec": [1, 3, 5, 8]},
        out=tmp_path / "k.json", csv_path=tmp_path / "k.csv", plot=tmp_path / "k.png",
        anchor="jpeg", workers=2, log=QUIET)
    bd = {r["codec"]: r for r in res["bd"]["rows"]}
    # the modern codecs beat JPEG on Kodak
    for name in ("webp", "avif", "jpegxl"):
        assert bd[name]["bd_rate_psnr_pct"] < 0, bd[name]
    jpeg = next(c for c in res["codecs"] if c["name"] == "jpeg")["results"]
    ref = report.load_reference("kodak")["curves"]["jpeg"]
    # our JPEG is in the same ballpark as the published Pillow JPEG curve
    from codec.eval.bd import bd_rate as _bd

    assert abs(_bd(ref["bpp"], ref["psnr"], jpeg["bpp"], jpeg["psnr-rgb"])) < 25
