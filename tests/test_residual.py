"""The residual layer above a model's base quality (codec.image.residual, coder version 8)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

import codec.image.pipeline
from codec.container import NcfError, Section, read_container, write_container
from codec.errors import NeurocodecError
from codec.image import decode_image, encode_image, reconstruct, residual


@pytest.fixture(scope="module")
def image(example_image) -> np.ndarray:
    """150 x 130 of the bundled Kodak image (not a multiple of the 8-pixel blocks)."""
    return np.asarray(Image.open(example_image).convert("RGB"))[100:230, 200:350].copy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_qualities_map_to_the_learned_layer_and_a_step():
    assert residual.split(4.0, 8, 8) == (4.0, None) and residual.split(6.0, 8, 8) == (6.0, None)
    assert residual.split(11.0, 8, 8) == (6.0, 8.0) and residual.split(12.0, 8, 8) == (6.0, pytest.approx(64 / 2 ** 3.6))
    assert residual.split(7.0, 8, 7) == (7.0, None)  # older coder versions have no residual layer
    assert residual.max_quality(8, 8) == 12.0 and residual.max_quality(8, 7) == 8.0


def test_quality_rises_past_the_learned_layer_and_files_decode_to_the_encoders_pixels(image):
    sizes, psnrs = [], []
    for quality in (6.0, 7.0, 9.5, 12.0):
        data = encode_image(image, quality=quality, threads=1)
        pixels = decode_image(data, threads=1)
        assert np.array_equal(pixels, reconstruct(image, quality=quality, threads=1))
        names = [s.name for s in read_container(data)[1]]
        assert ("residual" in names) == (quality > 6.0)
        sizes.append(len(data))
        psnrs.append(psnr(pixels, image))
    assert sizes == sorted(sizes) and psnrs == sorted(psnrs)
    assert psnrs[-1] > 42.0  # the learned layer alone stops below 36 dB on Kodak


def test_tiled_residual_files_and_pixels_are_identical_on_1_2_and_3_threads(image):
    data = encode_image(image, quality=9.0, tile=64, threads=1)
    assert sum(s.name.endswith("/residual") for s in read_container(data)[1]) == 9
    assert all(encode_image(image, quality=9.0, tile=64, threads=n) == data for n in (2, 3))
    one = decode_image(data, threads=1)
    assert all(np.array_equal(decode_image(data, threads=n), one) for n in (2, 3))
    assert np.array_equal(reconstruct(image, quality=9.0, tile=64, threads=2), one)


def test_a_perfect_base_codes_nothing_and_any_size_round_trips():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (13, 21, 3), dtype=np.uint8)
    data = residual.encode(x, x, 4.0)
    assert not any(data[:residual.GROUPS])
    assert np.array_equal(residual.add(x, residual.decode(data, 13, 21), 4.0), x)
    assert np.array_equal(residual.reconstruction(x, x, 4.0), x)
    noisy = np.clip(x.astype(int) + rng.integers(-9, 10, x.shape), 0, 255).astype(np.uint8)
    pixels = residual.add(noisy, residual.decode(residual.encode(x, noisy, 2.0), 13, 21), 2.0)
    assert np.array_equal(pixels, residual.reconstruction(x, noisy, 2.0))
    assert psnr(pixels, x) > psnr(noisy, x) + 6


def _with_section(data: bytes, name: str, new: bytes | None) -> bytes:
    header, sections = read_container(data)
    kept = [s for s in sections if s.name != name]
    return write_container(header, kept + ([Section(name, new)] if new is not None else []))


def test_bad_residual_sections_and_qualities_are_refused(image, monkeypatch):
    data = encode_image(image[:40, :40], quality=8.0, threads=1)
    section = dict((s.name, s.data) for s in read_container(data)[1])["residual"]
    for bad in (section[:10], bytes([residual.MAX_CODE + 1]) + section[1:], section[:residual.GROUPS],
                section[:-1], section + b"\0"):
        with pytest.raises(NcfError):
            decode_image(_with_section(data, "residual", bad))
    with pytest.raises(NcfError, match="sections"):
        decode_image(_with_section(data, "residual", None))
    header, sections = read_container(data)
    with pytest.raises(NcfError, match="quality"):
        decode_image(write_container(dataclasses.replace(header, quality=12.5), sections))
    monkeypatch.setattr(codec.image.pipeline, "CODER_VERSION", 7)
    with pytest.raises(NeurocodecError, match="quality"):
        encode_image(image[:40, :40], quality=9.0)


def test_the_learned_layer_alone_is_a_version_7_file(image):
    """What training validates: the learned layer's own qualities up to L."""
    data = encode_image(image[:40, :40], quality=8.0, threads=1, residual_layer=False)
    header, sections = read_container(data)
    assert header.coder["version"] == residual.SINCE - 1 and [s.name for s in sections] == ["streams"]
    assert decode_image(data).shape == (40, 40, 3)
    with pytest.raises(NeurocodecError, match="quality"):
        encode_image(image[:40, :40], quality=9.0, residual_layer=False)
