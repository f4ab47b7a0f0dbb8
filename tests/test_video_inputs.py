"""Unusual and bad video inputs: each gives a correct file or a clear error.

Tiny media are made with PyAV in pytest's tmp paths (no shared data needed).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from codec import video
from codec.errors import NeurocodecError
from codec.video.arch import min_bpp

FAST = dict(epochs=2, progress=False, threads=1)


def _frames(t=4, h=17, w=33, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _write(path, frames, pix_fmt="bgr0", pts=None, codec="ffv1"):
    """Frames into a one-stream file; ``pts`` in milliseconds (variable frame rate)."""
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=25)
        s.pix_fmt, s.width, s.height = pix_fmt, frames.shape[2], frames.shape[1]
        if pts is not None:
            s.time_base = Fraction(1, 1000)
        for i, fr in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(fr, format="rgb24").reformat(format=pix_fmt)
            if pts is not None:
                vf.pts, vf.time_base = pts[i], Fraction(1, 1000)
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def _roundtrip(source, **kw) -> np.ndarray:
    data = video.encode_video(source, **{**FAST, **kw})
    out = video.decode_video(data)
    assert out.dtype == np.uint8
    return out


def test_one_frame_and_odd_size():
    fr = _frames(1, 17, 33)
    out = _roundtrip(fr)
    assert out.shape == (1, 17, 33, 3)


@pytest.mark.parametrize("pix_fmt", ["yuv444p10le", "yuv444p", "gbrp10le"])
def test_ten_bit_and_444_sources(tmp_path, pix_fmt):
    fr = _frames(3, 18, 24)
    p = _write(tmp_path / f"{pix_fmt}.mkv", fr, pix_fmt)
    got, _ = video.read_frames(p)
    assert got.shape == fr.shape and np.abs(got.astype(int) - fr).mean() < 2  # converted to 8-bit RGB
    assert _roundtrip(p).shape == fr.shape


def test_variable_frame_rate_is_coded_at_one_rate(tmp_path):
    fr = _frames(5, 16, 16)
    p = _write(tmp_path / "vfr.mkv", fr, pts=[0, 40, 100, 120, 300])
    data = video.encode_video(p, **FAST)
    assert video.decode_video(data).shape == fr.shape
    assert video.video_fps_of(data) > 0  # every frame kept, one (average) rate recorded


def _wav(path):
    """A short silent mono WAV: a media file without a video stream."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        af = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        af.sample_rate = 8000
        for pkt in list(s.encode(af)) + list(s.encode()):
            out.mux(pkt)
    return path


def test_audio_only_file_is_refused(tmp_path):
    p = _wav(tmp_path / "tone.wav")
    assert not video.is_video(p)
    with pytest.raises(NeurocodecError, match="no video stream"):
        video.encode_video(p, **FAST)


def test_corrupt_containers(tmp_path):
    """Cut inside the header: a clear error; cut later: the frames before the cut, coded correctly."""
    fr = _frames(5, 16, 16)
    whole = _write(tmp_path / "v.mkv", fr).read_bytes()
    head = tmp_path / "head.mkv"
    head.write_bytes(whole[:100])
    with pytest.raises(NeurocodecError, match="cannot open"):
        video.encode_video(head, **FAST)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole[:len(whole) // 2])
    got, _ = video.read_frames(cut)
    assert 1 <= len(got) < 5 and np.array_equal(got, fr[:len(got)])
    assert _roundtrip(cut).shape == got.shape
    (tmp_path / "noise.mkv").write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(NeurocodecError):
        video.encode_video(tmp_path / "noise.mkv", **FAST)


def test_frame_size_change_is_refused(tmp_path):
    from PIL import Image

    Image.fromarray(_frames(1, 16, 16)[0]).save(tmp_path / "a.png")
    Image.fromarray(_frames(1, 16, 20)[0]).save(tmp_path / "b.png")
    with pytest.raises(NeurocodecError, match="frame size changes"):
        video.encode_video(tmp_path, **FAST)
    assert len(list(video.iter_frames(tmp_path, size=(16, 16)))) == 2  # resized: one size


def test_bpp_below_the_minimum_says_the_minimum():
    fr = _frames(4, 48, 64)
    floor = min_bpp(64, 48, 4, 30)
    with pytest.raises(NeurocodecError, match=f"at least {floor:.4g} bpp"):
        video.encode_video(fr, bpp=floor * 0.9, **FAST)
    data = video.encode_video(fr, quality=1, **FAST)  # a quality below it: the smallest file
    assert video.decode_video(data).shape == fr.shape
    assert abs(8 * len(data) / fr[..., 0].size / floor - 1) < 0.03  # on the minimum


def test_file_lands_on_the_target_bpp():
    """Rate control (codec.video.rate): the real file within 3 % of --bpp."""
    src, _ = video.read_frames(Path(__file__).resolve().parent / "data" / "carphone_176x144_10f.mp4")
    for bpp in (0.3, 0.6):
        data = video.encode_video(src, bpp=bpp, epochs=6, **{k: v for k, v in FAST.items() if k != "epochs"})
        real = 8 * len(data) / src[..., 0].size
        assert abs(real / bpp - 1) < 0.03, (bpp, real)



def test_command_line_errors(tmp_path, capsys):
    """Audio only, and a --bpp below the minimum: exit 1, one clear line, no file."""
    from codec.cli import main

    wav = _wav(tmp_path / "tone.wav")
    ncf = tmp_path / "a.ncf"
    assert main(["encode", str(wav), "-o", str(ncf)]) == 1
    assert "audio only" in capsys.readouterr().err and not ncf.exists()
    clip = _write(tmp_path / "v.mkv", _frames(3, 48, 64))
    assert main(["encode", str(clip), "-o", str(ncf), "--bpp", "0.01", "--effort", "fast"]) == 1
    err = capsys.readouterr().err
    assert "too low" in err and "needs at least" in err and "Traceback" not in err and not ncf.exists()
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(np.random.default_rng(2).bytes(3000))
    assert main(["encode", str(junk), "-o", str(ncf)]) == 1
    assert "neither a video PyAV can decode nor an image Pillow can read" in capsys.readouterr().err
