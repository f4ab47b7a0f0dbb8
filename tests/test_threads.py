"""Every core, the same results: files and pixels do not depend on `threads` (issue 37).

The units of work are fixed by the image: the transforms' bands (codec.image.bands), the runs
of rows of the exact kernels' products, the tiles (their coding steps side by side, one tile per
thread). `thin_bands` makes bands small (one latent
row, 16 pixel rows, every layer banded) so that a small image has many of them.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from codec import exact
from codec.errors import NeurocodecError
from codec.exact import _kernels
from codec.image import bands, decode_image, encode_image, reconstruct
from codec.image.pixels import to_tensor
from codec.threads import Pool, torch_threads
from codec.zoo import load_model


@pytest.fixture(scope="module")
def image(example_image) -> np.ndarray:
    """150 x 130 of the bundled Kodak image: 12 x 12 latent rows and columns once padded."""
    return np.asarray(Image.open(example_image).convert("RGB"))[100:230, 200:350].copy()


@pytest.fixture
def thin_bands(monkeypatch):
    monkeypatch.setattr(bands, "BAND_ROWS", 1)
    monkeypatch.setattr(bands, "MIN_BAND_AREA", 0)


@pytest.mark.parametrize("model", ["mlic-medium-gaussian", "mlic-medium-gmm", "mlic-medium-mvgmm", "hyperprior-small"])
@pytest.mark.parametrize("tile", [64, 1024])
def test_files_and_pixels_are_identical_on_1_2_and_3_threads(image, model, tile, thin_bands):
    """tile 64: 9 tiles, coded 2 or 3 side by side (codec.exact's kernels for the Gaussian and
    the mixture, float64 PyTorch for the multivariate mixture); 1024: one tile, threads inside it."""
    data = encode_image(image, model=model, quality=4, tile=tile, threads=1)
    assert all(encode_image(image, model=model, quality=4, tile=tile, threads=n) == data for n in (2, 3))
    one = decode_image(data, threads=1)
    assert all(np.array_equal(decode_image(data, threads=n), one) for n in (2, 3))
    assert np.array_equal(reconstruct(image, model, 4, tile=tile, threads=3), one)


@pytest.mark.parametrize("model", ["mlic-medium-gaussian", "hyperprior-small"])
def test_banded_transforms_equal_the_layers_applied_at_once(example_image, model):
    """With the shipped band settings, banding changes no bit on this CPU (oneDNN computes an
    output by the same operations whatever the height of a not too small input), so files
    written before bands decode to the same pixels (the bundled image: 4 bands)."""
    net, _ = load_model(model)
    x = to_tensor(np.asarray(Image.open(example_image).convert("RGB")), net.stride)
    q = torch.tensor([4.0])
    with torch.no_grad(), torch_threads(1, onednn=True), Pool(3) as pool:
        banded = lambda layers, v: bands.run(layers, v, pool)  # noqa: E731
        y = net.analysis(x, q)
        assert torch.equal(net.analysis(x, q, run=banded), y)
        y_hat = torch.round(y).contiguous(memory_format=torch.channels_last)  # as the decoder gives it
        assert torch.equal(net.synthesis(y_hat, q, run=banded), net.synthesis(y_hat, q))


def test_band_bounds_follow_the_latent_rows_only():
    assert bands.bounds(32, 32) == [0, 8, 16, 24, 32]
    assert bands.bounds(512, 32) == [0, 128, 256, 384, 512]  # the same bands at 16 x the resolution
    assert bands.bounds(80, 5) == [0, 80]  # up to BAND_ROWS latent rows: one band


def test_exact_kernels_give_the_same_bits_on_any_number_of_threads():
    rng = np.random.default_rng(0)
    # 2.4 M MACs, split by columns on 2 threads and by rows on more; 27 M MACs, split by columns
    for columns in (131, 1501):  # with a tail of columns right of the last full panel
        a, b, bias = rng.normal(size=(61, 300)), rng.normal(size=(300, columns)), rng.normal(size=61)
        one = _kernels.gemm(a, b, bias, 1)
        for n in (2, 3, 7):
            assert np.array_equal(_kernels.gemm(a, b, bias, n), one)
            with exact.threads(n):
                assert np.array_equal(exact.gemm(a, b, bias), one)
    x = rng.normal(scale=3, size=100_003)  # split from 2^16 values on, into runs of whole vectors
    for name in ("gelu", "elu", "sigmoid", "tanh"):
        one = getattr(_kernels, name)(x, 1)
        assert all(np.array_equal(getattr(_kernels, name)(x, n), one) for n in (2, 3, 7)), name


def test_pool_keeps_order_and_refuses_no_threads(image):
    with Pool(3) as pool:
        assert pool.map(lambda i: i * i, range(10)) == [i * i for i in range(10)]
    with pytest.raises(NeurocodecError, match="threads must be >= 1"):
        Pool(0)
    with pytest.raises(NeurocodecError, match="threads must be >= 1"):
        encode_image(image, model="hyperprior-small", threads=0)


def test_the_callers_torch_threads_are_restored(image):
    before = torch.get_num_threads()
    decode_image(encode_image(image, model="hyperprior-small", threads=2), threads=2)
    assert torch.get_num_threads() == before
