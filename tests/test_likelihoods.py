import math

import pytest
import torch

from models.gg import gammainc_p, gammainc_q, gg_bin_mass, gg_cdf
from models.likelihoods import (BETA_MAX, BETA_MIN, FAMILIES, SCALE_BOUND, GeneralizedGaussian,
                                MultivariateGaussianMixture, make_family, univariate_of)

torch.set_num_threads(1)
D = torch.float64


def test_gammainc_gradcheck_in_a_and_x():
    a = torch.tensor([0.25, 0.5, 1.0, 2.0, 3.3], dtype=D, requires_grad=True)
    x = torch.tensor([0.01, 0.7, 3.0, 10.0, 40.0], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(gammainc_p, (a, x))
    assert torch.autograd.gradcheck(gammainc_q, (a, x))


def test_gg_bin_mass_gradcheck_in_beta_and_scale():
    v = torch.tensor([0.2, -2.0, 7.0, 0.0], dtype=D, requires_grad=True)
    scale = torch.tensor([0.7, 1.5, 3.0, 0.3], dtype=D, requires_grad=True)
    beta = torch.tensor([0.5, 1.3, 2.5, 3.9], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(gg_bin_mass, (v, scale, beta))
    x = torch.tensor([0.3, -1.0, 2.0], dtype=D)
    mean = torch.zeros(3, dtype=D)
    assert torch.autograd.gradcheck(lambda s, b: gg_cdf(x, mean, s, b), (scale[:3], beta[:3]))


def test_gg_special_cases_match_gaussian_and_laplace():
    v = torch.linspace(-6, 6, 25, dtype=D)
    gauss = torch.distributions.Normal(torch.tensor(0.0, dtype=D), torch.tensor(1.0, dtype=D))
    m2 = gg_bin_mass(v, torch.tensor(math.sqrt(2), dtype=D), torch.tensor(2.0, dtype=D))
    assert torch.allclose(m2, gauss.cdf(v + 0.5) - gauss.cdf(v - 0.5), atol=1e-14)
    lap = torch.distributions.Laplace(torch.tensor(0.0, dtype=D), torch.tensor(1.5, dtype=D))
    m1 = gg_bin_mass(v, torch.tensor(1.5, dtype=D), torch.tensor(1.0, dtype=D))
    assert torch.allclose(m1, lap.cdf(v + 0.5) - lap.cdf(v - 0.5), atol=1e-14)
    for fam, ref in (("gaussian", gauss), ("laplace", None)):
        f = make_family(fam)
        s = torch.full_like(v, 1.0 if fam == "gaussian" else 1.5)
        lik = f.likelihood(v, {"mean": torch.zeros_like(v), "scale": s})
        want = m2 if fam == "gaussian" else m1
        assert torch.allclose(lik, want.clamp_min(1e-9), atol=1e-12)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_interface_shapes_and_normalisation(name):
    torch.manual_seed(0)
    C = 4
    fam = make_family(name, channels=C, K=3, G=2).double()
    t = torch.randn(2, fam.num_params(C), 3, 3, dtype=D)
    params = fam.params_from_head(t)
    # the unit bins tile the line: masses over a wide integer grid sum to one
    grid = torch.arange(-60, 61, dtype=D).view(-1, 1, 1, 1, 1)
    if name == "mvgmm":
        assert univariate_of(fam).name == "gmm" and univariate_of(fam).symbols_are_residuals
        cv = fam.coding_values(params)
        assert set(cv) == {"weight", "mean", "scale"} and cv["weight"].shape == (2, C // 2, 3, 3, 3)
        return
    y = grid + torch.zeros(1, 2, C, 3, 3, dtype=D)
    lik = torch.stack([fam.likelihood(y[i], params) for i in range(y.shape[0])])
    assert lik.shape == y.shape
    assert torch.allclose(lik.sum(0), torch.ones(2, C, 3, 3, dtype=D), atol=1e-6)
    cv = fam.coding_values(params)
    want = {"gaussian": {"mean", "scale"}, "laplace": {"mean", "scale"}, "gg": {"mean", "scale", "beta"},
            "gmm": {"weight", "mean", "scale"}}[name]
    assert set(cv) == want
    assert fam.symbols_are_residuals  # every univariate family codes residuals (gmm: around its heaviest mean)
    if name == "gmm":
        assert cv["weight"].shape == (2, C, 3, 3, 3)
        assert torch.allclose(cv["weight"].sum(-1), torch.ones(2, C, 3, 3, dtype=D))
    bound = fam.scale_bound(cv["beta"]) if name == "gg" else SCALE_BOUND
    assert (cv["scale"] >= bound - 1e-12).all()


@pytest.mark.parametrize("mode", ["element", "channel", "model"])
def test_gg_beta_modes_bounds_and_gradients(mode):
    C = 3
    fam = GeneralizedGaussian(mode, channels=C)
    assert fam.num_params(C) == (3 if mode == "element" else 2) * C
    t = torch.randn(2, fam.num_params(C), 4, 4) * 3
    t.requires_grad_(True)
    p = fam.params_from_head(t)
    assert ((p["beta"] >= BETA_MIN) & (p["beta"] <= BETA_MAX)).all()
    assert (p["scale"] >= fam.scale_bound(p["beta"]) - 1e-6).all()
    y = torch.randn(2, C, 4, 4) * 2
    fam.likelihood(y, p).log().sum().backward()
    if mode == "element":
        assert t.grad.abs().sum() > 0
    else:
        assert fam.beta_raw.grad is not None and fam.beta_raw.grad.abs().sum() > 0


def test_gg_scale_bound_depends_on_beta():
    fam = GeneralizedGaussian("model")
    b = fam.scale_bound(torch.tensor([0.5, 1.0, 2.0, 4.0]))
    assert abs(b[2].item() - SCALE_BOUND * math.sqrt(2)) < 1e-3  # beta = 2 is the Gaussian bound
    assert (b[:-1] < b[1:]).all()  # same centre-bin mass: the bound grows with beta


def test_gg_gradient_rectification():
    fam = GeneralizedGaussian("model", rectify=True)
    mean = torch.zeros(2)
    p = {"mean": mean, "scale": torch.ones(2), "beta": torch.full((2,), 0.5)}
    y = torch.tensor([0.3, 1.3], requires_grad=True)
    fam.likelihood(y, p).log().sum().backward()
    assert y.grad[0] == 0 and y.grad[1] != 0


def test_mvgmm_chain_rule_reproduces_joint_density():
    torch.manual_seed(1)
    K, G = 3, 3
    fam = MultivariateGaussianMixture(K, G).double()
    t = torch.randn(1, fam.num_params(G), 2, 2, dtype=D)
    p = fam.params_from_head(t)
    x = torch.randn(1, 1, 2, 2, G, dtype=D) * 2
    # joint: torch's mixture of full-covariance Gaussians
    mvn = torch.distributions.MultivariateNormal(p["mean"], scale_tril=p["scale_tril"])
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=p["weight"]), mvn)
    joint = mix.log_prob(x)
    chain = torch.zeros_like(joint)
    for j in range(G):
        cv = fam.conditional_coding_values(p, x, j)
        comp = torch.distributions.Normal(cv["mean"], cv["scale"]).log_prob(x[..., j:j + 1])
        chain = chain + torch.logsumexp(torch.log(cv["weight"]) + comp, -1)
    assert torch.allclose(chain, joint, atol=1e-10)
    # the discretized chain-rule likelihood sums to ~1 over a grid for G = 2
    fam2 = MultivariateGaussianMixture(2, 2).double()
    p2 = fam2.params_from_head(torch.randn(1, fam2.num_params(2), 1, 1, dtype=D) * 0.3)
    g = torch.arange(-25, 26, dtype=D)
    a, b = torch.meshgrid(g, g, indexing="ij")
    y = torch.stack([a.flatten(), b.flatten()], 1).view(-1, 2, 1, 1)
    pp = {k: v.expand(y.shape[0], *v.shape[1:]) for k, v in p2.items()}
    lik = fam2.likelihood(y, pp)
    assert abs(lik.prod(1).sum().item() - 1) < 1e-6


def test_gmm_rounds_around_its_heaviest_component():
    """y_hat = round(y - m*) + m*, m* the mean of the heaviest component (the first of equal
    ones); the gradient passes straight through."""
    fam = make_family("gmm", K=3)
    weight = torch.tensor([[0.2, 0.5, 0.3], [0.4, 0.2, 0.4]])
    mean = torch.tensor([[9.0, 0.3, -4.0], [1.25, 7.0, -2.0]])
    y = torch.tensor([2.1, 3.0], requires_grad=True)
    y_hat = fam.quantize(y, {"weight": weight, "mean": mean, "scale": torch.ones(2, 3)})
    assert torch.allclose(y_hat, torch.tensor([2.3, 3.25]))
    y_hat.sum().backward()
    assert torch.equal(y.grad, torch.ones(2))
