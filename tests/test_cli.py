"""The `neurocodec` command: files on disk, one-line errors, atomic and non-clobbering output."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codec.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_png(tmp_path_factory, example_image):
    path = tmp_path_factory.mktemp("img") / "small.png"
    Image.open(example_image).crop((100, 100, 180, 164)).save(path)
    return path


def test_encode_decode_info_models(tmp_path, small_png, capsys):
    ncf, png = tmp_path / "a.ncf", tmp_path / "a.png"
    assert main(["encode", str(small_png), "-o", str(ncf), "--quality", "5", "--verify"]) == 0
    assert main(["decode", str(ncf), "-o", str(png)]) == 0
    assert Image.open(png).size == (80, 64)
    capsys.readouterr()
    assert main(["info", str(ncf), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bytes"] == ncf.stat().st_size and info["quality"] == 5.0
    assert main(["models", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert any(m["weights_shipped"] and m["default"] for m in models)
    assert {"name", "kind", "likelihood", "weights_shipped"} <= set(models[0])


def test_existing_output_needs_force_and_input_is_never_overwritten(tmp_path, small_png, capsys):
    ncf = tmp_path / "a.ncf"
    ncf.write_bytes(b"keep me")
    assert main(["encode", str(small_png), "-o", str(ncf)]) == 1
    assert ncf.read_bytes() == b"keep me"
    assert "--force" in capsys.readouterr().err
    assert main(["encode", str(small_png), "-o", str(ncf), "--force"]) == 0
    assert ncf.read_bytes()[:3] != b"kee"
    assert main(["decode", str(ncf), "-o", str(ncf), "--force"]) == 1
    assert "input" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "foreign", "missing"])
def test_bad_files_give_one_line_error_and_no_output(tmp_path, small_png, capsys, damage):
    ncf, out = tmp_path / "a.ncf", tmp_path / "out.png"
    assert main(["encode", str(small_png), "-o", str(ncf)]) == 0
    if damage == "truncate":
        ncf.write_bytes(ncf.read_bytes()[:-7])
    elif damage == "foreign":
        ncf.write_bytes(small_png.read_bytes())
    else:
        ncf.unlink()
    capsys.readouterr()
    assert main(["decode", str(ncf), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("neurocodec: error:") and err.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == ([ncf] if ncf.exists() else [])


def test_unwritable_output_folder(small_png, tmp_path, capsys):
    assert main(["encode", str(small_png), "-o", str(tmp_path / "no" / "such" / "dir.ncf")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_stdin_stdout_through_the_console_script(small_png):
    run = [sys.executable, "-m", "codec.cli"]
    enc = subprocess.run(run + ["encode", "-", "-o", "-", "--quality", "2"], input=small_png.read_bytes(),
                         capture_output=True, check=True)
    dec = subprocess.run(run + ["decode", "-", "-o", "-"], input=enc.stdout, capture_output=True, check=True)
    img = np.asarray(Image.open(__import__("io").BytesIO(dec.stdout)))
    assert img.shape == (64, 80, 3)
    bad = subprocess.run(run + ["decode", "-", "-o", "-"], input=b"garbage", capture_output=True)
    assert bad.returncode == 1 and b"Traceback" not in bad.stderr and bad.stdout == b""


def test_video_encode_decode_through_the_cli(tmp_path, capsys, carphone):
    clip = carphone
    ncf, y4m = tmp_path / "clip.ncf", tmp_path / "clip.y4m"
    assert main(["encode", str(clip), "-o", str(ncf), "--frames", "2", "--size", "32x32", "--threads", "0"]) == 1
    assert "threads must be >= 1" in capsys.readouterr().err and not ncf.exists()
    threads = torch.get_num_threads()
    assert main(["encode", str(clip), "-o", str(ncf), "--frames", "2", "--size", "32x32", "--epochs", "2", "--verify",
                 "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads
    assert not (tmp_path / "clip.ncf.resume").exists()
    capsys.readouterr()
    assert main(["info", str(ncf), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["media"], info["frames"], info["width"]) == ("video", 2, 32)
    assert main(["decode", str(ncf), "-o", str(y4m)]) == 0
    assert y4m.read_bytes().startswith(b"YUV4MPEG2 ")
    assert main(["decode", str(ncf), "-o", str(tmp_path / "frames")]) == 0
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["frame_00000.png", "frame_00001.png"]


def test_video_only_flags_are_refused_for_images(tmp_path, small_png, capsys):
    ncf = tmp_path / "a.ncf"
    assert main(["encode", str(small_png), "-o", str(ncf), "--bpp", "0.1"]) == 1
    assert "--bpp applies to videos" in capsys.readouterr().err and not ncf.exists()


def test_threads_give_the_same_image_file_and_pixels(tmp_path, small_png, capsys):
    files = {n: tmp_path / f"{n}.ncf" for n in (1, 3)}
    for n, ncf in files.items():
        assert main(["encode", str(small_png), "-o", str(ncf), "--threads", str(n), "--verify"]) == 0
    assert files[1].read_bytes() == files[3].read_bytes()
    pngs = [tmp_path / f"{n}.png" for n in (1, 2)]
    for n, png in zip((1, 2), pngs):
        assert main(["decode", str(files[1]), "-o", str(png), "--threads", str(n)]) == 0
    assert np.array_equal(np.asarray(Image.open(pngs[0])), np.asarray(Image.open(pngs[1])))
    for command in (["encode", str(small_png), "-o", str(tmp_path / "x.ncf")], ["decode", str(files[1]), "-o",
                                                                               str(tmp_path / "x.png")], ["demo"]):
        assert main(command + ["--threads", "0"]) == 1
        assert "threads must be >= 1" in capsys.readouterr().err


def test_limit_flags(tmp_path, small_png, capsys):
    ncf = tmp_path / "a.ncf"
    assert main(["encode", str(small_png), "-o", str(ncf), "--max-pixels", "100"]) == 1
    assert "above the limit of 100" in capsys.readouterr().err and not ncf.exists()
    assert main(["encode", str(small_png), "-o", str(ncf), "--max-pixels", str(80 * 64), "--verify"]) == 0
    for cmd in (["decode", str(ncf), "-o", str(tmp_path / "a.png")], ["info", str(ncf)]):
        assert main(cmd + ["--max-pixels", "100"]) == 1
        assert "max_pixels" in capsys.readouterr().err
        assert main(cmd + ["--max-bytes", "10"]) == 1
        assert "above the limit of 10" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [ncf]


def test_verify_mismatch_fails_loudly_and_writes_nothing(tmp_path, small_png, capsys, monkeypatch):
    import codec.image

    monkeypatch.setattr(codec.image, "reconstruct", lambda *a, **k: np.zeros((64, 80, 3), np.uint8))
    assert main(["encode", str(small_png), "-o", str(tmp_path / "a.ncf"), "--verify"]) == 1
    assert "verification failed" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_interrupt_while_writing_leaves_nothing(tmp_path, small_png, capsys, monkeypatch):
    import os

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    assert main(["encode", str(small_png), "-o", str(tmp_path / "a.ncf")]) == 130
    assert "interrupted" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
