"""Encoder-side refinement (`encode_image(refine=N)`, `neurocodec encode --refine N`)."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from codec import zoo
from codec.errors import NeurocodecError
from codec.image import decode_image, encode_image, load_rgb, reconstruct
from codec.image.refine import sga_round
from codec.train.export import write_weights



def test_sga_round_tends_to_rounding_and_has_gradients():
    v = torch.tensor([-1.9, -0.2, 0.05, 0.4, 0.6, 2.97], requires_grad=True)
    g = torch.Generator().manual_seed(0)
    cold = sga_round(v, 1e-3, g)
    assert torch.equal(cold.detach(), torch.round(v.detach()))
    warm = torch.stack([sga_round(v, 0.5, g) for _ in range(200)])
    assert torch.all(warm >= torch.floor(v)) and torch.all(warm <= torch.floor(v) + 1)
    # the mean lies between the neighbours, nearer the closer one
    assert torch.all((warm.mean(0) - v.detach()).abs() < 0.5)
    warm.sum().backward()
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def _rd_cost(rgb, data, model, quality):
    """lambda * 255^2 * MSE of the decoded file + its real bpp."""
    net, _ = zoo.load_model(model)
    out = decode_image(data)
    mse = ((out.astype(np.float64) - rgb) ** 2).mean() / 255 ** 2
    return float(net.lambda_for(torch.tensor([quality]))[0]) * 255 ** 2 * mse + len(data) * 8 / (rgb.shape[0] * rgb.shape[1])


def test_refine_lowers_the_real_rd_cost_and_decodes_exactly(example_image):
    """With the trained hyperprior-small: smaller real RD cost (file bytes, decoded pixels)
    after 20 steps, and the decoder (unchanged) reproduces the refined reconstruction."""
    rgb = load_rgb(example_image)[200:296, 300:428].copy()
    model, q = "hyperprior-small", 3.0
    plain = encode_image(rgb, model=model, quality=q)
    calls = []
    refined = encode_image(rgb, model=model, quality=q, refine=20, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (20, 20) and len(calls) == 20
    assert refined != plain
    assert _rd_cost(rgb, refined, model, q) < 0.97 * _rd_cost(rgb, plain, model, q)
    assert np.array_equal(decode_image(refined), reconstruct(rgb, model=model, quality=q, refine=20))


@pytest.fixture(scope="module")
def random_mlic_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    for i, name in enumerate(("mlic-tiny-gaussian", "mlic-tiny-gmm")):
        torch.manual_seed(i)
        write_weights(zoo.get_preset(name).build(), name, folder, "float32")
    return folder


@pytest.fixture
def random_mlic(random_mlic_dir, monkeypatch):
    monkeypatch.setenv("NEUROCODEC_WEIGHTS", str(random_mlic_dir))
    zoo.load_model.cache_clear()
    yield
    zoo.load_model.cache_clear()


@pytest.mark.parametrize("name", ["mlic-tiny-gaussian", "mlic-tiny-gmm"])
def test_refine_round_trips_mlic(random_mlic, name):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    data = encode_image(rgb, model=name, quality=5, refine=3)
    assert np.array_equal(decode_image(data), reconstruct(rgb, model=name, quality=5, refine=3))


def test_refine_refuses_negative_steps(example_image):
    with pytest.raises(NeurocodecError, match="refine"):
        encode_image(example_image, model="hyperprior-small", refine=-1)


def test_cli_refine_shows_progress_and_verifies(tmp_path, example_image, capsys, carphone):
    from PIL import Image

    from codec.cli import main

    src, ncf = tmp_path / "crop.png", tmp_path / "crop.ncf"
    Image.open(example_image).crop((300, 200, 364, 264)).save(src)
    assert main(["encode", str(src), "-o", str(ncf), "--model", "hyperprior-small", "--refine", "4", "--verify"]) == 0
    assert "refine" in capsys.readouterr().err and ncf.stat().st_size > 0
    video = tmp_path / "clip.ncf"
    assert main(["encode", str(carphone), "-o", str(video), "--refine", "4"]) == 1
    assert "--refine applies to images" in capsys.readouterr().err and not video.exists()


def test_effort_levels_pick_refinement_steps(tmp_path, example_image, capsys, monkeypatch):
    """`--effort max` is `--refine 50` (the same bytes), fast and default the plain encode;
    an unknown level or an effort together with steps is refused."""
    from PIL import Image

    from codec.cli import main
    from codec.image import refine

    monkeypatch.setitem(refine.EFFORT_STEPS, "max", 3)  # the same path, fewer steps
    rgb = np.array(Image.open(example_image).convert("RGB").crop((300, 200, 364, 264)))
    plain = encode_image(rgb, model="hyperprior-small", quality=5)
    assert encode_image(rgb, model="hyperprior-small", quality=5, effort="fast") == plain
    assert encode_image(rgb, model="hyperprior-small", quality=5, effort="default") == plain
    most = encode_image(rgb, model="hyperprior-small", quality=5, effort="max")
    assert most == encode_image(rgb, model="hyperprior-small", quality=5, refine=3) != plain
    with pytest.raises(NeurocodecError, match="effort must be one of"):
        encode_image(rgb, model="hyperprior-small", effort="slow")
    with pytest.raises(NeurocodecError, match="not both"):
        encode_image(rgb, model="hyperprior-small", effort="max", refine=2)
    src, ncf = tmp_path / "crop.png", tmp_path / "crop.ncf"
    Image.fromarray(rgb).save(src)
    assert main(["encode", str(src), "-o", str(ncf), "--model", "hyperprior-small", "--quality", "5",
                 "--effort", "max", "--verify"]) == 0
    assert ncf.read_bytes() == most
    assert main(["encode", str(src), "-o", str(tmp_path / "b.ncf"), "--effort", "max", "--refine", "2"]) == 1
    assert "not both" in capsys.readouterr().err and not (tmp_path / "b.ncf").exists()
