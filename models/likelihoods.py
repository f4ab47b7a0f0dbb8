"""Likelihood families for the latent y: one interface, five families.

A network head emits a tensor of `family.num_params(C)` channels for C latent channels;
the family turns it into named parameters, gives the training likelihood, and names the
float values the entropy coder needs. The codec layer snaps those values to the coder's
grid and codes; models never call the coder.

Interface (every family)
    name                       "gaussian" | "laplace" | "gg" | "gmm" | "mvgmm"
    symbols_are_residuals      True: the coder codes round(y - mean) under a zero-mean law
                               and reconstructs symbol + mean (gaussian, laplace, gg), for
                               mixtures round(y - mean of the heaviest component; for mvgmm
                               of each element's conditional mixture, coded one element at a
                               time); False: round(y) directly under the law
    num_params(C)              channels a head must emit for C latent channels
    params_from_head(t, channel_offset=0) -> dict[str, Tensor]
                               t: (B, num_params(C), H, W). Layout is parameter-major:
                               t.chunk(P, 1)[p] holds parameter p for all C channels (for the
                               mixtures each parameter chunk holds C*K channels, channel-major:
                               channel c, component k at c*K + k). channel_offset says which
                               latent channel t's first channel is (for per-channel betas).
                               Returned tensors have shape (B, C, H, W) plus a trailing K axis
                               for gmm ((B, C/G, H, W, ...) for mvgmm, see there).
    likelihood(y_tilde, params) -> Tensor
                               probability mass of the unit bin [y - 0.5, y + 0.5] around each
                               value, lower-bounded at 1e-9 (compressai's LowerBound: the
                               gradient still flows when it pushes the mass up).
    coding_values(params) -> dict[str, Tensor]
                               float tensors named as the coder expects (see each family).
    quantize(y, params) -> Tensor
                               y_hat with a straight-through gradient: round(y - mean) + mean
                               for residual families (the heaviest component's mean for gmm),
                               round(y) otherwise.

Training quantization proxy (the model's choice, stated here): the rate is the likelihood of
y + U(-0.5, 0.5) noise (additive uniform noise); the values passed on to contexts and the
synthesis are the straight-through rounded `quantize(y, params)`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from compressai.ops import LowerBound

from models.gg import center_mass_scale, gg_bin_mass

SCALE_BOUND = 0.11  # lower bound on Gaussian / Laplace / mixture-component scales
LIKELIHOOD_BOUND = 1e-9
BETA_MIN, BETA_MAX = 0.3, 4.0  # the coder's beta range
_SQRT2 = math.sqrt(2.0)


class _TensorLowerBound(torch.autograd.Function):
    """max(x, bound) with compressai's pass-through rule: the gradient flows where x >= bound
    or where it would push x up. The bound itself gets no gradient."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x, bound)
        return torch.maximum(x, bound)

    @staticmethod
    def backward(ctx, g):
        x, bound = ctx.saved_tensors
        pass_through = (x >= bound) | (g < 0)
        return g * pass_through.to(g.dtype), None


def lower_bound(x: torch.Tensor, bound) -> torch.Tensor:
    if not torch.is_tensor(bound):
        bound = torch.full_like(x, float(bound))
    return _TensorLowerBound.apply(x, bound.expand_as(x).contiguous().to(x.dtype))


def _gauss_bin_mass(v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mass of [v - .5, v + .5] under N(0, scale), in the lower tail for accuracy."""
    w = v.abs()
    upper = 0.5 * torch.erfc(-((0.5 - w) / scale) / _SQRT2)
    lower = 0.5 * torch.erfc(-((-0.5 - w) / scale) / _SQRT2)
    return upper - lower


def _laplace_bin_mass(v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mass of [v - .5, v + .5] under Laplace(0, b=scale)."""
    w = -v.abs()
    hi, lo = w + 0.5, w - 0.5  # lo < 0
    f_lo = 0.5 * torch.exp(lo / scale)
    f_hi = torch.where(hi < 0, 0.5 * torch.exp(hi.clamp(max=0) / scale),
                       1.0 - 0.5 * torch.exp(-hi.clamp(min=0) / scale))
    return f_hi - f_lo


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class LikelihoodFamily(nn.Module):
    name = ""
    symbols_are_residuals = True
    params_per_channel = 2

    def __init__(self):
        super().__init__()
        self._lik_bound = LowerBound(LIKELIHOOD_BOUND)

    def num_params(self, channels: int) -> int:
        return self.params_per_channel * channels

    def bound_likelihood(self, p: torch.Tensor) -> torch.Tensor:
        return self._lik_bound(p)

    def quantize(self, y: torch.Tensor, params: dict, rounding=None) -> torch.Tensor:
        """y as the coder sees it: rounded around the mean for residual families, rounded
        itself otherwise; `rounding` (default: straight-through) lets encoder-side refinement
        substitute a soft rounding."""
        rounding = rounding or _ste_round
        if self.symbols_are_residuals:
            m = params["mean"]
            return rounding(y - m) + m
        return rounding(y)

    def coding_values(self, params: dict) -> dict:
        raise NotImplementedError

    def head_rows_from_gaussian(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Given the rows (weights or bias) of a Gaussian parameter head's last layer
        ([scale | mean], C each), the rows of this family's head that emit the same law; None
        where the family cannot express it. Lets `train --init` carry a trained Gaussian model
        over to another family as the same function."""
        return None

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class Gaussian(LikelihoodFamily):
    """N(mean, scale); head layout [scale | mean] (compressai's order); scale >= 0.11.
    coding_values: {"mean", "scale"}, scale = the standard deviation."""

    name = "gaussian"

    def params_from_head(self, t: torch.Tensor, channel_offset: int = 0) -> dict:
        scale, mean = t.chunk(2, 1)
        return {"mean": mean, "scale": lower_bound(scale, SCALE_BOUND)}

    def likelihood(self, y_tilde: torch.Tensor, params: dict) -> torch.Tensor:
        return self.bound_likelihood(_gauss_bin_mass(y_tilde - params["mean"], params["scale"]))

    def coding_values(self, params: dict) -> dict:
        return {"mean": params["mean"], "scale": params["scale"]}


class Laplace(Gaussian):
    """Laplace(mean, b = scale), density exp(-|x - mean| / b) / (2b); scale >= 0.11.
    coding_values: {"mean", "scale"} with scale = b."""

    name = "laplace"

    def likelihood(self, y_tilde: torch.Tensor, params: dict) -> torch.Tensor:
        return self.bound_likelihood(_laplace_bin_mass(y_tilde - params["mean"], params["scale"]))


class GeneralizedGaussian(LikelihoodFamily):
    """Generalized Gaussian GG(mean, alpha, beta), density
        beta / (2 alpha Gamma(1/beta)) exp(-(|x - mean| / alpha)^beta),
    CDF 0.5 + 0.5 sign(x - mean) P(1/beta, (|x - mean| / alpha)^beta).

    coding_values: {"mean", "scale", "beta"} where **scale is alpha** (not a standard
    deviation: for beta = 2, sigma = alpha / sqrt(2)) and beta in [0.3, 4].

    beta_mode: "element" (the head emits beta: layout [scale | mean | beta]),
    "channel" (a learned nn.Parameter per latent channel; needs `channels`) or "model" (one
    learned nn.Parameter). beta = 0.3 + 3.7 sigmoid(raw), initialised at beta = 2.

    Improved training of Zhang, Li & Liu, "Generalized Gaussian Model for Learned Image
    Compression" (as implemented here):
    - beta-dependent scale bound: alpha >= alpha_min(beta), where alpha_min(beta) gives the
      centre bin [-0.5, 0.5] the same mass as a Gaussian with the usual sigma bound 0.11
      (so alpha_min(2) = 0.11 sqrt(2); the bound grows with beta: heavy-tailed small-beta
      laws need a smaller alpha for the same centre mass, from 0.002 at beta = 0.5 to 0.29
      at beta = 4).
      Tabulated on a log-beta grid at construction, linearly interpolated; the bound passes
      no gradient to beta.
    - gradient rectification (`rectify=True`): under rounding, the rate of an element whose
      |y - mean| < 0.5 does not change when y moves inside that bin, whereas the noisy GG
      likelihood with small beta pulls such y hard towards the mean. The gradient of the rate
      with respect to y_tilde is therefore zeroed where |y_tilde - mean| < 0.5 (the gradients
      to mean, scale and beta are kept).
    """

    name = "gg"
    _GRID = 64

    def __init__(self, beta_mode: str = "element", channels: int | None = None, rectify: bool = True):
        super().__init__()
        if beta_mode not in ("element", "channel", "model"):
            raise ValueError(f"beta_mode must be element, channel or model, not {beta_mode!r}")
        self.beta_mode = beta_mode
        self.rectify = rectify
        init = math.log((2.0 - BETA_MIN) / (BETA_MAX - 2.0))  # sigmoid^-1 of beta = 2
        if beta_mode == "channel":
            if not channels:
                raise ValueError("beta_mode='channel' needs the number of latent channels")
            self.beta_raw = nn.Parameter(torch.full((channels,), init))
        elif beta_mode == "model":
            self.beta_raw = nn.Parameter(torch.tensor(init))
        self.params_per_channel = 3 if beta_mode == "element" else 2
        self._element_init = init
        center = float(torch.special.erf(torch.tensor(0.5 / SCALE_BOUND / _SQRT2, dtype=torch.float64)))
        lb = torch.linspace(math.log(BETA_MIN), math.log(BETA_MAX), self._GRID, dtype=torch.float64)
        table = [center_mass_scale(math.exp(v), center) for v in lb.tolist()]
        self.register_buffer("_bound_logbeta", lb.float(), persistent=False)
        self.register_buffer("_bound_alpha", torch.tensor(table, dtype=torch.float32), persistent=False)

    def scale_bound(self, beta: torch.Tensor) -> torch.Tensor:
        """alpha_min(beta), piecewise linear in log beta."""
        g = self._bound_logbeta.to(beta.dtype)
        tab = self._bound_alpha.to(beta.dtype)
        u = (beta.detach().clamp(BETA_MIN, BETA_MAX).log() - g[0]) / (g[1] - g[0])
        i = u.floor().clamp(0, self._GRID - 2)
        t = u - i
        i = i.long()
        return tab[i] * (1 - t) + tab[i + 1] * t

    @staticmethod
    def _beta(raw: torch.Tensor) -> torch.Tensor:
        return BETA_MIN + (BETA_MAX - BETA_MIN) * torch.sigmoid(raw)

    def params_from_head(self, t: torch.Tensor, channel_offset: int = 0) -> dict:
        if self.beta_mode == "element":
            scale, mean, braw = t.chunk(3, 1)
            beta = self._beta(braw + self._element_init)
        else:
            scale, mean = t.chunk(2, 1)
            if self.beta_mode == "channel":
                c = mean.shape[1]
                raw = self.beta_raw[channel_offset:channel_offset + c].view(1, c, 1, 1)
            else:
                raw = self.beta_raw
            beta = self._beta(raw).to(mean.dtype).expand_as(mean)
        return {"mean": mean, "scale": lower_bound(scale, self.scale_bound(beta)), "beta": beta}

    def likelihood(self, y_tilde: torch.Tensor, params: dict) -> torch.Tensor:
        mean = params["mean"]
        if self.rectify and torch.is_grad_enabled():
            inside = (y_tilde.detach() - mean.detach()).abs() < 0.5
            y_tilde = torch.where(inside, y_tilde.detach(), y_tilde)
        mass = gg_bin_mass(y_tilde - mean, params["scale"], params["beta"])
        return self.bound_likelihood(mass)

    def coding_values(self, params: dict) -> dict:
        return {"mean": params["mean"], "scale": params["scale"], "beta": params["beta"]}

    def head_rows_from_gaussian(self, rows: torch.Tensor) -> torch.Tensor | None:
        """beta = 2 (raw 0) and alpha = sqrt(2) sigma: the Gaussian itself, bound included
        (alpha_min(2) = sqrt(2) 0.11). Element mode only: the other modes keep [scale | mean]."""
        if self.beta_mode != "element":
            return None
        scale, mean = rows.chunk(2, 0)
        return torch.cat([scale * _SQRT2, mean, torch.zeros_like(scale)], 0)

    def extra_repr(self) -> str:
        return f"name='gg', beta_mode={self.beta_mode!r}, rectify={self.rectify}"


def heaviest_mean(weight: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """(..., K) weights and means -> (...) the mean of the heaviest component (argmax: the
    first of equal ones, as the coder picks it from the snapped weights)."""
    return mean.gather(-1, weight.argmax(-1, keepdim=True))[..., 0]


def _gmm_bin_mass(v: torch.Tensor, weight, mean, scale) -> torch.Tensor:
    """v: (...), weight/mean/scale: (..., K) -> mixture mass of [v - .5, v + .5]."""
    return (weight * _gauss_bin_mass(v.unsqueeze(-1) - mean, scale)).sum(-1)


class GaussianMixture(LikelihoodFamily):
    """sum_k weight_k N(mean_k, scale_k), K components (default 3).

    Head layout [weight logits | means | scales], each C*K channels, channel-major
    (channel c, component k at c*K + k). Params: weight (softmax over K), mean, scale (>= 0.11),
    each (B, C, H, W, K). coding_values: {"weight", "mean", "scale"}, each (..., K); weights
    sum to 1.

    Symbols: round(y - m*), m* the mean of the heaviest component (the first of equally heavy
    ones), coded under the mixture shifted by -m*. A mixture of equal components is then
    exactly the Gaussian it came from, rounding and all: rounding y itself instead (coder
    versions before 5; before 6 for mvgmm) cost a Gaussian carried over to the mixture 2.6 %
    more bits and 0.04 dB on kodim05 at quality 4 before any training (mlic-medium,
    2026-12-07)."""

    name = "gmm"

    def __init__(self, K: int = 3):
        super().__init__()
        self.K = K
        self.params_per_channel = 3 * K

    def quantize(self, y: torch.Tensor, params: dict, rounding=None) -> torch.Tensor:
        rounding = rounding or _ste_round
        m = heaviest_mean(params["weight"], params["mean"])
        return rounding(y - m) + m

    def _split(self, t: torch.Tensor) -> list[torch.Tensor]:
        B, _, H, W = t.shape
        out = []
        for chunk in t.chunk(3, 1):
            C = chunk.shape[1] // self.K
            out.append(chunk.reshape(B, C, self.K, H, W).permute(0, 1, 3, 4, 2))
        return out

    def params_from_head(self, t: torch.Tensor, channel_offset: int = 0) -> dict:
        logits, mean, scale = self._split(t)
        return {"weight": self.weights_of(logits), "mean": mean, "scale": lower_bound(scale, SCALE_BOUND)}

    def weights_of(self, logits: torch.Tensor) -> torch.Tensor:
        """The component weights: softmax over the last axis (codec.exact computes it on its
        own exp for the coder)."""
        return torch.softmax(logits, -1)

    def likelihood(self, y_tilde: torch.Tensor, params: dict) -> torch.Tensor:
        return self.bound_likelihood(_gmm_bin_mass(y_tilde, params["weight"], params["mean"], params["scale"]))

    def coding_values(self, params: dict) -> dict:
        return {"weight": params["weight"], "mean": params["mean"], "scale": params["scale"]}

    def head_rows_from_gaussian(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Equal weights (logits 0), every component the Gaussian's mean, and component k's
        scale rows multiplied by 1 + 0.1 (k - (K-1)/2): a law within a per cent of the
        Gaussian's variance whose components differ, so that their gradients differ and they
        separate (identical components would stay identical forever)."""
        scale, mean = rows.chunk(2, 0)
        spread = 1 + 0.1 * (torch.arange(self.K, dtype=rows.dtype) - (self.K - 1) / 2)
        spread = spread.repeat(scale.shape[0]).reshape(-1, *[1] * (rows.dim() - 1))
        means = mean.repeat_interleave(self.K, 0)
        return torch.cat([torch.zeros_like(means), means, scale.repeat_interleave(self.K, 0) * spread], 0)

    def extra_repr(self) -> str:
        return f"name='gmm', K={self.K}"


class MultivariateGaussianMixture(LikelihoodFamily):
    """Mixture of K multivariate Gaussians over groups of G consecutive channels (McQuic-style
    vectorized prior): group g holds channels g*G .. g*G + G - 1 of the head's C channels.

    Per group and position the head emits K weight logits, K*G means and K*G(G+1)/2 Cholesky
    entries (a lower-triangular L per component, covariance L L^T, diagonal bounded below at
    0.11 like the Gaussian's scale, so that a Gaussian head carries over exactly). Head
    layout: the num_params(C) channels reshape to (C/G, K + K*G + K*G*(G+1)/2), group-major,
    in that order [logits | means (k, i) | tril entries (k, row-major lower triangle)].

    params_from_head -> {"weight": (B, C/G, H, W, K), "mean": (..., K, G),
                         "scale_tril": (..., K, G, G)}.

    Chain rule. With x = mean_k + L_k eps, the conditional of element j given x_0..x_(j-1)
    under component k is N(mean_kj + sum_(i<j) L_k[j, i] eps_ki, L_k[j, j]) where eps_k is
    found by forward substitution, and the component weights update to
    w_k N(x_<j; mean_k, Sigma_k) / sum: a univariate Gaussian mixture. Training
    likelihood = product over j of the discretized conditionals (conditioned on the given
    values), returned per element (element j's entry is its conditional mass). Coding: each
    element as a univariate GMM with `conditional_coding_values` (`univariate_of`): symbols
    round(y - m*) with m* the mean of the conditional's heaviest component (coder version 6
    on; version 5 and before round(y)).
    """

    name = "mvgmm"

    def __init__(self, K: int = 3, G: int = 2):
        super().__init__()
        if not 1 <= G <= 8:
            raise ValueError("group size G must be in 1..8")
        self.K, self.G = K, G
        self.per_group = K + K * G + K * G * (G + 1) // 2

    def num_params(self, channels: int) -> int:
        if channels % self.G:
            raise ValueError(f"{channels} channels are not a multiple of the group size {self.G}")
        return channels // self.G * self.per_group

    def params_from_head(self, t: torch.Tensor, channel_offset: int = 0) -> dict:
        B, P, H, W = t.shape
        K, G = self.K, self.G
        ng = P // self.per_group
        t = t.reshape(B, ng, self.per_group, H, W).permute(0, 1, 3, 4, 2)
        logits = t[..., :K]
        mean = t[..., K:K + K * G].reshape(B, ng, H, W, K, G)
        tri = t[..., K + K * G:].reshape(B, ng, H, W, K, G * (G + 1) // 2)
        L = _fill_tril(tri, G)
        diag = torch.diagonal(L, dim1=-2, dim2=-1)
        diag_b = lower_bound(diag, SCALE_BOUND)
        L = L - torch.diag_embed(diag) + torch.diag_embed(diag_b)
        return {"weight": torch.softmax(logits, -1), "mean": mean, "scale_tril": L}

    def conditional_coding_values(self, params: dict, previous_values: torch.Tensor | None,
                                  index_in_group: int) -> dict:
        """{"weight", "mean", "scale"} (each (..., K)) of element j = index_in_group of each
        group given its already decoded elements 0..j-1, previous_values (..., j), where
        `...` is the leading shape of params (e.g. (B, C/G, H, W), or (n,) after indexing)."""
        j = index_in_group
        w, mean, L = params["weight"], params["mean"], params["scale_tril"]
        logw = torch.log(w.clamp_min(1e-30))
        cond_mean = mean[..., j]
        if j > 0:
            x = previous_values[..., :j].unsqueeze(-2)  # (..., 1, j)
            eps = []
            for i in range(j):
                r = x[..., i] - mean[..., i]
                for l in range(i):
                    r = r - L[..., i, l] * eps[l]
                eps.append(r / L[..., i, i])
                logw = logw - 0.5 * eps[i] ** 2 - torch.log(L[..., i, i])
            for i in range(j):
                cond_mean = cond_mean + L[..., j, i] * eps[i]
        return {"weight": torch.softmax(logw, -1), "mean": cond_mean, "scale": L[..., j, j]}

    def likelihood(self, y_tilde: torch.Tensor, params: dict) -> torch.Tensor:
        B, C, H, W = y_tilde.shape
        x = y_tilde.reshape(B, C // self.G, self.G, H, W).permute(0, 1, 3, 4, 2)
        out = []
        for j in range(self.G):
            cv = self.conditional_coding_values(params, x, j)
            out.append(_gmm_bin_mass(x[..., j], cv["weight"], cv["mean"], cv["scale"]))
        lik = torch.stack(out, -1).permute(0, 1, 4, 2, 3).reshape(B, C, H, W)
        return self.bound_likelihood(lik)

    def coding_values(self, params: dict) -> dict:
        """The law of each group's first element; later elements need
        `conditional_coding_values`."""
        return self.conditional_coding_values(params, None, 0)

    def head_rows_from_gaussian(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Per group: equal weights (logits 0), every component the Gaussian's means, L
        diagonal with the Gaussian's scales, component k's multiplied by 1 + 0.1 (k - (K-1)/2)
        (see GaussianMixture.head_rows_from_gaussian): independent elements, each the
        Gaussian's law to within a per cent of its variance, whose conditional heaviest mean
        is the Gaussian's mean."""
        K, G = self.K, self.G
        scale, mean = rows.chunk(2, 0)
        groups, tail = scale.shape[0] // G, scale.shape[1:]
        scale, mean = scale.reshape(groups, G, *tail), mean.reshape(groups, G, *tail)
        zero = torch.zeros_like(scale[:, 0])
        entries = [zero] * K  # the logits
        entries += [mean[:, i] for _ in range(K) for i in range(G)]
        for k in range(K):
            spread = 1 + 0.1 * (k - (K - 1) / 2)
            entries += [scale[:, i] * spread if c == i else zero for i in range(G) for c in range(i + 1)]
        return torch.stack(entries, 1).reshape(-1, *tail)

    def extra_repr(self) -> str:
        return f"name='mvgmm', K={self.K}, G={self.G}"


def _fill_tril(entries: torch.Tensor, G: int) -> torch.Tensor:
    """(..., G(G+1)/2) row-major lower-triangle entries -> (..., G, G)."""
    rows = []
    n = 0
    for i in range(G):
        row = [entries[..., n + c] for c in range(i + 1)]
        n += i + 1
        row += [torch.zeros_like(entries[..., 0])] * (G - i - 1)
        rows.append(torch.stack(row, -1))
    return torch.stack(rows, -2)


# the univariate family an mvgmm step is coded with
def univariate_of(family: LikelihoodFamily) -> LikelihoodFamily:
    return GaussianMixture(family.K) if isinstance(family, MultivariateGaussianMixture) else family


FAMILIES = ("gaussian", "laplace", "gg", "gmm", "mvgmm")


def make_family(name: str, *, channels: int | None = None, K: int = 3, G: int = 2,
                beta_mode: str = "element", rectify: bool = True) -> LikelihoodFamily:
    """Build a family by name; `channels` is the number of latent channels (for gg's
    per-channel beta)."""
    if name == "gaussian":
        return Gaussian()
    if name == "laplace":
        return Laplace()
    if name == "gg":
        return GeneralizedGaussian(beta_mode, channels, rectify)
    if name == "gmm":
        return GaussianMixture(K)
    if name == "mvgmm":
        return MultivariateGaussianMixture(K, G)
    raise ValueError(f"unknown likelihood family {name!r}; choose from {', '.join(FAMILIES)}")
