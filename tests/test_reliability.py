"""Hardening (issue #9): determinism per shipped model, tiling, weights checks, odd inputs."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import torch
from PIL import Image

from codec import zoo
from codec.container import NcfError, read_container, write_container
from codec.errors import NeurocodecError, WeightsError
from codec.image import decode_image, encode_image, load_rgb, reconstruct

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(json.loads((ROOT / "weights" / "manifest.json").read_text()))


@pytest.fixture(scope="module")
def photo(example_image) -> np.ndarray:
    """130x150 of the bundled Kodak image: with tile=64 that is 3x3 tiles, edge tiles partial."""
    return np.asarray(Image.open(example_image).convert("RGB"))[100:230, 200:350].copy()


def _with_threads(n: int, fn, *args, **kw):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn(*args, **kw)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("model", SHIPPED)
@pytest.mark.parametrize("tile", [64, 1024])
def test_every_shipped_model_codes_identically_across_thread_counts_and_runs(photo, model, tile):
    data = _with_threads(1, encode_image, photo, model=model, quality=5.5, tile=tile)
    assert _with_threads(2, encode_image, photo, model=model, quality=5.5, tile=tile) == data
    one, two, again = (_with_threads(n, decode_image, data) for n in (1, 2, 2))
    assert np.array_equal(one, two) and np.array_equal(two, again)
    assert np.array_equal(one, reconstruct(photo, model, 5.5, tile=tile))


def test_tiles_are_sections_and_the_header_says_so(photo):
    header, sections = read_container(encode_image(photo, model="hyperprior-small", quality=3, tile=64))
    assert header.coder["tile"] == 64 and (header.pad_width, header.pad_height) == (192, 192)
    names = [s.name for s in sections]
    assert names == [f"t{i}/streams" for i in range(9)] and header.coder["y_streams"] == 4
    assert "tile" not in read_container(encode_image(photo, quality=3))[0].coder  # small: untiled
    with pytest.raises(NeurocodecError, match="tile must be a multiple of 64"):
        encode_image(photo, tile=100)


@pytest.mark.parametrize("coder, match", [({"tile": 96}, "tile side 96"), ({"tile": 4096}, "tile side 4096"),
                                          ({"tile": 0}, "tile side 0"), ({"y_streams": 3}, "streams")])
def test_inconsistent_tiling_is_a_malformed_file(photo, coder, match):
    header, sections = read_container(encode_image(photo, quality=3, tile=64))
    forged = write_container(dataclasses.replace(header, coder={**header.coder, **coder}), sections)
    with pytest.raises(NcfError, match=match):
        decode_image(forged)


def test_untiled_file_too_large_for_one_tile_is_refused(photo):
    header, sections = read_container(encode_image(photo, quality=3))
    big = dataclasses.replace(header, width=4096, height=4096, pad_width=4096, pad_height=4096)
    with pytest.raises(NcfError, match="untiled"):
        decode_image(write_container(big, sections))


def test_tampered_weights_are_refused(tmp_path, monkeypatch, photo):
    data = encode_image(photo[:32, :32], model="hyperprior-small", quality=2)
    shutil.copytree(zoo.weights_dir(), tmp_path / "w")
    path = tmp_path / "w" / zoo.manifest()["hyperprior-small"]["file"]
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    monkeypatch.setenv("NEUROCODEC_WEIGHTS", str(tmp_path / "w"))
    zoo.load_model.cache_clear()
    try:
        with pytest.raises(WeightsError, match="corrupted or replaced"):
            decode_image(data)
        path.unlink()
        with pytest.raises(WeightsError, match=r"release hyperprior-small@[0-9a-f]{16} is not installed"):
            decode_image(data)
    finally:
        monkeypatch.undo()
        zoo.load_model.cache_clear()


def _file(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_more_input_modes():
    rgb16 = np.array([[[0, 32768, 65535], [257, 514, 771]]], dtype=np.uint16)
    got = load_rgb(_file(imagecodecs.png_encode(rgb16)))
    assert got.shape == (1, 2, 3) and abs(int(got[0, 0, 1]) - 128) <= 1 and got[0, 1].tolist() == [1, 2, 3]
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (40, 255))
    assert load_rgb(la).tolist() == [[[255, 255, 255], [40, 40, 40]]]
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([10, 20, 30, 200, 100, 50])
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    assert load_rgb(pal).tolist() == [[[255, 255, 255], [200, 100, 50]]]
    assert load_rgb(Image.new("I", (1, 1), 70000)).tolist() == [[[255, 255, 255]]]  # clipped to 16 bits
    assert load_rgb(Image.new("1", (3, 1), 1)).tolist() == [[[255] * 3] * 3]


def test_corrupt_and_bomb_images_are_refused(example_image):
    png = Path(example_image).read_bytes()
    with pytest.raises(NeurocodecError, match="cannot read image"):
        load_rgb(_file(png[: len(png) // 2]))
    with pytest.raises(NeurocodecError, match="not an image"):
        load_rgb(_file(b""))
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")
    with pytest.raises(NeurocodecError, match="100000x100000|decompression bomb"):
        load_rgb(_file(bomb))


@pytest.mark.slow
def test_8k_photo_round_trips_with_bounded_memory():
    """The measurement docs/reliability.md quotes, as a test: peak RSS under 3 GB."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "large_image_memory.py"), "--json"],
                         capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["size"] == "7680x4320" and result["psnr"] > 25
    assert result["peak_rss_mb"] < 3000, result
