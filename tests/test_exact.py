"""codec.exact: kernels that give the same bits on every CPU, and coder version 4 built on them.

The kernels are checked against their definition (a sequential sum in Python floats, which are
IEEE doubles: bit for bit), against PyTorch (close), across their own vector widths (AVX2 and
the SSE2 baseline: bit for bit), and the coder's parameter codes across forced PyTorch kernel
sets and thread counts (benchmarks/kernel_portability.py): version 4 must count 0.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import codec.image.pipeline
from codec import exact
from codec.container import read_container
from codec.exact import _kernels
from codec.image import decode_image, encode_image, reconstruct, load_rgb
from codec.zoo import load_model
from models.mlic import ChannelReweight, LinearAttention, build_mlic

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def crop(example_image) -> np.ndarray:
    return load_rgb(example_image)[96:224, 320:448]


def test_gemm_is_the_sequential_sum_bit_for_bit():
    """Every shape class: full vector blocks, row and column tails, K = 0, no bias."""
    rng = np.random.default_rng(0)
    for m, k, n, with_bias in [(9, 7, 29, True), (4, 600, 13, True), (1, 3, 1, False), (5, 0, 14, True)]:
        a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        bias = rng.standard_normal(m) if with_bias else None
        got = _kernels.gemm(a, b, bias)
        for i in range(m):
            for j in range(n):
                acc = float(bias[i]) if with_bias else 0.0
                for t in range(k):
                    acc = acc + float(a[i, t]) * float(b[t, j])
                assert got[i, j] == acc, (m, k, n, i, j)


def test_activations_are_close_to_pytorch():
    x = np.concatenate([np.linspace(-40, 40, 40001), np.random.default_rng(1).standard_normal(10000)])
    t = torch.from_numpy(x)
    for name, ref in [("gelu", F.gelu), ("elu", F.elu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
                      ("erf", torch.erf)]:
        np.testing.assert_allclose(getattr(_kernels, name)(x), ref(t).numpy(), rtol=4e-15, atol=4e-15, err_msg=name)
    np.testing.assert_allclose(_kernels.exp(x), np.exp(x), rtol=1e-15)
    assert np.isnan(_kernels.gelu(np.array([np.nan]))[0]) and _kernels.gelu(np.array([np.inf]))[0] == np.inf


def test_avx2_and_baseline_vector_widths_give_the_same_bits(tmp_path):
    script = ("import numpy as np, sys; from codec.exact import _kernels as K; r = np.random.default_rng(2); "
              "a, b, x = r.standard_normal((37, 301)), r.standard_normal((301, 203)), r.standard_normal(100003) * 4; "
              "np.savez(sys.argv[1], isa=K.isa(), g=K.gemm(a, b, a[:, 0]), e=K.gelu(x), t=K.tanh(x), p=K.exp(x))")
    outs = []
    for isa in ("native", "baseline"):
        env = {**os.environ, "NEUROCODEC_EXACT_ISA": isa}
        subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{isa}.npz")], env=env, cwd=ROOT, check=True)
        outs.append(np.load(tmp_path / f"{isa}.npz"))
    assert str(outs[1]["isa"]) == "baseline"
    for key in ("g", "e", "t", "p"):
        assert outs[0][key].tobytes() == outs[1][key].tobytes(), key


def test_layers_match_pytorch():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 7, 9, dtype=torch.float64)
    for conv in [torch.nn.Conv2d(6, 5, 3, padding=1), torch.nn.Conv2d(6, 4, 5, padding=2), torch.nn.Conv2d(6, 3, 1),
                 torch.nn.ConvTranspose2d(6, 4, 5, 2, 2, 1), torch.nn.ConvTranspose2d(6, 3, 3, 2, 1, 1)]:
        conv = conv.double()
        torch.testing.assert_close(exact.convert(conv)(x), conv(x), rtol=1e-12, atol=1e-12)
    conv = torch.nn.Conv2d(6, 5, 5, padding=2).double()
    pos = torch.rand(7, 9) < 0.5
    assert torch.equal(exact.convert(conv).at(x, pos), exact.convert(conv)(x)[:, :, pos])
    attention, reweight = LinearAttention(6, 6, 8, 8).double(), ChannelReweight(6).double()
    mask = torch.rand(7, 9) < 0.5
    torch.testing.assert_close(exact.convert(attention)(x, x, key_mask=mask), attention(x, x, key_mask=mask))
    torch.testing.assert_close(exact.convert(reweight)(x), reweight(x))
    with pytest.raises(NotImplementedError):
        exact.convert(torch.nn.Conv2d(6, 5, 3, stride=2))


def test_convolution_is_the_product_with_its_patches_in_any_runs_of_columns(monkeypatch):
    """conv2d gathers its patches inside the product, COLUMN_BYTES of them per product (bounded
    memory): bit for bit the product with the patches built in NumPy, whatever the runs, of
    every output or of those at chosen positions."""
    rng = np.random.default_rng(0)
    x, weight, bias = rng.standard_normal((6, 13, 11)), rng.standard_normal((5, 6, 5, 5)), rng.standard_normal(5)
    at = rng.random((13, 11)) < 0.5
    whole = exact.conv2d(x, weight, bias, (2, 2)), exact.conv2d(x, weight, bias, (2, 2), at)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (2, 2), (2, 2))), (5, 5), axis=(1, 2))
    patches = windows.transpose(0, 3, 4, 1, 2).reshape(6 * 25, 13 * 11)
    assert np.array_equal(whole[0].reshape(5, -1), _kernels.gemm(weight.reshape(5, -1), patches, bias))
    with pytest.raises(ValueError, match="outside"):
        _kernels.patches_gemm(weight.reshape(5, -1), x, np.arange(150), np.array([x.size]))
    monkeypatch.setattr(exact, "COLUMN_BYTES", 1)  # one output row per product
    assert np.array_equal(exact.conv2d(x, weight, bias, (2, 2)), whole[0])
    assert np.array_equal(exact.conv2d(x, weight, bias, (2, 2), at), whole[1])


@pytest.mark.parametrize("model, pytorch_version, exact_version", [("mlic-medium-gaussian", 3, 4),
                                                                   ("mlic-medium-gmm", 6, 7)])
def test_shipped_model_parameters_match_the_pytorch_route(crop, model, pytorch_version, exact_version):
    """On the shipped weights the exact route's parameters are those of the float64 PyTorch
    route up to float64 roundings (the mixture's softmax on the exact exp), so the codes agree
    (a code may differ only at a grid boundary)."""
    net, _ = load_model(model)
    family = net.likelihood
    x = codec.image.pixels.to_tensor(crop, net.stride)
    q = torch.tensor([4.0])
    with torch.no_grad():
        y = net.analysis(x, q)
        z = net.hyper_analysis(y)
    medians = net.z_medians().view(1, -1, 1, 1)
    z_hat = (torch.round(z - medians) + medians).double()
    params = []
    for version in (pytorch_version, exact_version):
        param_net = codec.image.pipeline.parameter_net(net, version)
        assert exact.is_parameter_net(param_net) == (version == exact_version)
        steps, seen = param_net.coding_steps(z_hat, q), []
        with torch.no_grad():
            step = next(steps)
            try:
                while True:
                    seen.append({k: v.numpy() for k, v in step.params.items()})
                    step = steps.send(torch.round(y[step.mask].double()))
            except StopIteration:
                pass
        params.append(seen)
    assert len(params[0]) == len(params[1]) == 8
    for old, new in zip(*params):
        for key in old:
            np.testing.assert_allclose(new[key], old[key], rtol=1e-11, atol=1e-12)
        old_codes, new_codes = codec.entropy.quantize_params(family, **old), exact.quantize_params(family, **new)
        assert all(np.mean(old_codes[k] != new_codes[k]) < 1e-3 for k in old)


def test_exact_grid_is_the_coders_grid():
    rng = np.random.default_rng(3)
    params = {"mean": rng.standard_normal(100000) * 20, "scale": np.exp(rng.uniform(-3, 9, 100000))}
    ours, coders = exact.quantize_params("gaussian", **params), codec.entropy.quantize_params("gaussian", **params)
    assert all(np.array_equal(ours[k], coders[k]) for k in ("mean", "scale"))
    with pytest.raises(codec.entropy.EntropyCodingError):
        exact.quantize_params("gaussian", mean=np.zeros(2), scale=np.array([1.0, np.nan]))
    bounds = exact.SCALE_BOUNDS  # on, just below and just above every bound, and far outside the grid
    edges = np.concatenate([bounds, np.nextafter(bounds, 0), np.nextafter(bounds, np.inf), [1e-300, 1e300]])
    assert np.array_equal(exact.scale_codes(edges), np.searchsorted(bounds, edges, side="right"))


@pytest.mark.parametrize("model, oldest", [("mlic-medium-gaussian", 4), ("hyperprior-small", 4), ("mlic-medium-gmm", 5)])
def test_newer_versions_hold_the_same_streams_where_they_change_nothing_for_the_model(crop, model, oldest, monkeypatch):
    """Versions 5-8 write version 4's streams where codec.exact covers the model; 6 changes only
    the multivariate mixture's steps; 7 moves the Gaussian mixture's parameters to codec.exact,
    whose codes equal the float64 PyTorch route's here (they may differ at a grid boundary);
    8 adds the residual layer only above the base quality (6 here)."""
    data = encode_image(crop[:70, :100], model=model, quality=5)
    assert read_container(data)[0].coder["version"] == codec.image.CODER_VERSION == 8
    assert np.array_equal(decode_image(data), reconstruct(crop[:70, :100], model=model, quality=5))
    for version in range(oldest, 8):
        monkeypatch.setattr(codec.image.pipeline, "CODER_VERSION", version)
        older = encode_image(crop[:70, :100], model=model, quality=5)
        monkeypatch.undo()
        assert read_container(older)[0].coder["version"] == version
        assert read_container(older)[1] == read_container(data)[1]
        assert np.array_equal(decode_image(older), decode_image(data))


def test_version_3_files_still_decode(crop, monkeypatch):
    monkeypatch.setattr(codec.image.pipeline, "CODER_VERSION", 3)
    data, expected = encode_image(crop, quality=3), reconstruct(crop, quality=3)
    monkeypatch.undo()
    assert read_container(data)[0].coder["version"] == 3
    assert np.array_equal(decode_image(data), expected)


def test_families_outside_the_exact_kernels_take_float64_pytorch_parameters():
    for family in ("gaussian", "gmm"):
        assert exact.supports(build_mlic("mlic-tiny", family))
    gmm = build_mlic("mlic-tiny", "gmm")
    assert not codec.image.pipeline.exact_parameters(gmm, 6) and codec.image.pipeline.exact_parameters(gmm, 7)
    for family in ("gg", "mvgmm"):
        model = build_mlic("mlic-tiny", family)
        assert not exact.supports(model) and not codec.image.pipeline.exact_parameters(model, 7)
        assert next(codec.image.pipeline.parameter_net(model, 7).parameters()).dtype == torch.float64
        with pytest.raises(NotImplementedError):
            exact.parameter_net(model)


def test_exact_mixture_weights_are_the_softmax_and_code_as_the_coder_does():
    logits = torch.randn(1000, 3, dtype=torch.float64) * 4
    weights = exact.ExactGaussianMixture(3).weights_of(logits)
    torch.testing.assert_close(weights, torch.softmax(logits, -1), rtol=1e-14, atol=1e-15)
    params = {"weight": weights.numpy(), "mean": np.random.default_rng(0).standard_normal((1000, 3)) * 5,
              "scale": np.exp(np.random.default_rng(1).uniform(-2, 4, (1000, 3)))}
    ours, coders = exact.quantize_params("gmm", **params), codec.entropy.quantize_params("gmm", **params)
    assert np.array_equal(ours["weight"], coders["weight"]) and np.array_equal(ours["mean"], coders["mean"])
    assert np.mean(ours["scale"] != coders["scale"]) < 1e-3
