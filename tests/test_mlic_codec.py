"""MLIC models through real .ncf files, with randomly initialised weights.

The weights are exported with codec.train.write_weights into a temporary weights folder
(NEUROCODEC_WEIGHTS), so these tests need no trained MLIC weights. Untrained models give
wide latents: values outside the coder's support must be escaped and coded exactly.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from codec import zoo
from codec.container import NcfError, Section, pack_streams, read_container, unpack_streams, write_container
from codec.errors import WeightsError
from codec.image import decode_image, encode_image, reconstruct
from codec.train.export import write_weights

FAMILIES = ("gaussian", "gg", "gmm", "mvgmm")
TINY = [f"mlic-tiny-{f}" for f in FAMILIES]


def _export_random(weights_dir, name: str, seed: int) -> None:
    """A randomly initialised preset, exported like a trained one (CDF tables, manifest entry)."""
    torch.manual_seed(seed)
    model = zoo.get_preset(name).build()
    write_weights(model, name, weights_dir, "float32")


def _use_weights(monkeypatch, folder) -> None:
    monkeypatch.setenv("NEUROCODEC_WEIGHTS", str(folder))
    zoo.load_model.cache_clear()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    for i, name in enumerate(TINY):
        _export_random(folder, name, seed=i)
    mp = pytest.MonkeyPatch()
    _use_weights(mp, folder)
    yield folder
    mp.undo()
    zoo.load_model.cache_clear()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """60x40 (padded to 64x64): a smooth gradient with noise, so the latents vary."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:40, 0:60]
    base = np.stack([xx * 3, yy * 4, (xx + yy) * 2], -1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _threads(n: int):
    class _Ctx:
        def __enter__(self):
            self.before = torch.get_num_threads()
            torch.set_num_threads(n)

        def __exit__(self, *exc):
            torch.set_num_threads(self.before)

    return _Ctx()


def test_every_preset_and_family_is_registered(weights):
    models = {m["name"]: m for m in zoo.list_models()}
    assert models[zoo.DEFAULT_IMAGE_MODEL]["default"] and sum(m["default"] for m in models.values()) == 1
    for size in ("mlic-tiny", "mlic-small", "mlic-medium", "mlic++"):
        for family in FAMILIES:
            m = models[f"{size}-{family}"]
            assert (m["kind"], m["likelihood"]) == ("image", family)
            assert m["weights_shipped"] == (size == "mlic-tiny")  # only the temporary ones here
            assert m["qualities"] == [1.0, 12.0]
    with pytest.raises(WeightsError, match="no weights"):
        encode_image(np.zeros((8, 8, 3), np.uint8), model="mlic-small-gaussian")


@pytest.mark.parametrize("name", TINY)
def test_round_trip_is_exact_through_a_real_file(weights, image, name):
    data = encode_image(image, model=name, quality=3.5)
    header, sections = read_container(data)
    net, _ = zoo.load_model(name)
    steps = net.S * 2 * (net.likelihood_family.G if name.endswith("mvgmm") else 1)
    assert header.model == name and header.coder["y_streams"] == steps
    assert [s.name for s in sections] == ["streams"]
    assert len(unpack_streams(sections[0].data, 1 + steps, "streams")) == 1 + steps
    out = decode_image(data)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, reconstruct(image, name, 3.5))


@pytest.mark.parametrize("name", TINY)
def test_coding_is_deterministic_across_thread_counts(weights, image, name):
    with _threads(1):
        data = encode_image(image, model=name, quality=6)
        one = decode_image(data)
    with _threads(2):
        assert encode_image(image, model=name, quality=6) == data
        two = decode_image(data)
    assert np.array_equal(one, two)


@pytest.mark.parametrize("name", ["mlic-tiny-gaussian", "mlic-tiny-gg", "mlic-tiny-gmm", "mlic-tiny-mvgmm"])
def test_wide_latents_are_escaped_exactly(weights, image, name):
    """Gains x 300 push y far outside the support the laws give frequency to."""
    net, _ = zoo.load_model(name)
    with torch.no_grad():
        net.gain.log_gain += math.log(300.0)
    try:
        data = encode_image(image, model=name, quality=2)
        assert np.array_equal(decode_image(data), reconstruct(image, name, 2))
    finally:
        with torch.no_grad():
            net.gain.log_gain -= math.log(300.0)


def test_file_is_refused_with_other_weights(weights, image, tmp_path, monkeypatch):
    name = "mlic-tiny-gaussian"
    data = encode_image(image, model=name, quality=4)
    _export_random(tmp_path, name, seed=99)
    _use_weights(monkeypatch, tmp_path)
    try:
        with pytest.raises(WeightsError, match=r"unknown weights release mlic-tiny-gaussian@[0-9a-f]{16}"):
            decode_image(data)  # another folder's weights of the same model are never tried
    finally:
        _use_weights(monkeypatch, weights)
    header, sections = read_container(data)
    forged = write_container(dataclasses.replace(header, weights_hash=bytes(8)), sections)
    with pytest.raises(WeightsError):
        decode_image(forged)


def test_missing_or_foreign_streams_are_refused(weights, image):
    header, (section,) = read_container(encode_image(image, model="mlic-tiny-gmm", quality=1))
    n = 1 + header.coder["y_streams"]
    streams = unpack_streams(section.data, n, "streams")

    def forged(streams, y_streams=header.coder["y_streams"], name="streams"):
        coder = {**header.coder, "y_streams": y_streams}
        return write_container(dataclasses.replace(header, coder=coder), [Section(name, pack_streams(streams))])

    with pytest.raises(NcfError, match="sections"):
        decode_image(write_container(header, []))
    with pytest.raises(NcfError, match="truncated"):
        decode_image(forged(streams[:-1]))
    with pytest.raises(NcfError, match="fewer streams"):
        decode_image(forged(streams[:-1], n - 2))
    with pytest.raises(NcfError, match="more streams"):
        decode_image(forged(streams + [b""], n))
    with pytest.raises(NcfError, match="lacks the section"):
        decode_image(forged(streams, name="y9"))
