"""Mean-scale hyperprior (Minnen et al. 2018, without the autoregressive context), variable rate.

One network covers the whole rate range: per-quality gain vectors (Cui et al. 2021,
"asymmetric gained" units) scale the latent before quantization and are inverted before
synthesis; a fractional quality interpolates geometrically between neighbouring levels.
The module only produces tensors; the codec layer snaps parameters and entropy-codes them.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN
from compressai.models.utils import conv, deconv

from models.coding import CodingStep
from models.layers import apply

# Rate-distortion trade-offs of the quality levels (MSE on 0..1 pixels, x 255^2 in the loss),
# the values CompressAI's pretrained models use for qualities 1..8.
DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)
# One ladder for every model: a model with L quality levels was trained for its first L rungs.
# The rungs past 8 go on at CompressAI's ratio (~1.93 per level) to reach the high rates
# (38 dB and more on Kodak) that quality 8 stops short of.
LAMBDA_LADDER = DEFAULT_LAMBDAS + (0.35, 0.67, 1.3)
SCALE_BOUND = 0.11  # lower bound on the Gaussian scale, as in CompressAI
Y_STREAMS = 4  # coding steps (channel groups, one rANS stream each) of the mean-scale model's y


def interpolate_levels(log_table: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Rows of a per-level table of logs at fractional quality (B,) in [1, levels], exponentiated:
    integer qualities pick a level, fractions interpolate geometrically between neighbours."""
    levels = log_table.shape[0]
    q = quality.clamp(1, levels) - 1
    lo = q.floor().long().clamp(max=levels - 1)
    hi = (lo + 1).clamp(max=levels - 1)
    t = (q - lo.to(q.dtype)).view(-1, *([1] * (log_table.dim() - 1)))
    return torch.exp(log_table[lo] * (1 - t) + log_table[hi] * t)


def gain_init(lambdas, inverse: bool = False) -> torch.Tensor:
    """Initial log gains: at high rate the MSE-optimal quantization step scales as
    lambda^-1/2, so the gain before rounding starts at (lambda / lambda_mid)^1/2 and the
    inverse gain at its reciprocal. Starting from equal gains, as we first did, the levels
    never separated on CPU budgets: every quality gave the same rate."""
    log_l = torch.log(torch.tensor(lambdas, dtype=torch.float32))
    log_g = 0.5 * (log_l - log_l.mean())
    return -log_g if inverse else log_g


class GainUnit(nn.Module):
    """Per-level channel gains; quality q in [1, levels] picks or interpolates them."""

    def __init__(self, levels: int, channels: int, init: torch.Tensor | None = None):
        super().__init__()
        self.levels = levels
        start = torch.zeros(levels, channels) if init is None else init.view(levels, 1).expand(levels, channels)
        self.log_gain = nn.Parameter(start.clone())

    def forward(self, quality: torch.Tensor) -> torch.Tensor:
        """quality: (B,) float tensor in [1, levels]; returns (B, C, 1, 1) gains."""
        return interpolate_levels(self.log_gain, quality)[:, :, None, None]


class VariableRate:
    """Mixin for models trained over `self.lambdas` (one rate point per quality level) with a
    factorized prior `self.entropy_bottleneck` on z."""

    lambdas: tuple

    @property
    def levels(self) -> int:
        return len(self.lambdas)

    def lambda_for(self, quality: torch.Tensor) -> torch.Tensor:
        """The trade-off a (fractional) quality was trained for, log-interpolated."""
        log_l = torch.log(torch.tensor(self.lambdas, dtype=quality.dtype))
        return interpolate_levels(log_l, quality)

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

    def z_medians(self) -> torch.Tensor:
        """(C,) medians of the factorized prior on z: z is coded as round(z - median)."""
        return self.entropy_bottleneck.quantiles[:, 0, 1].detach()

    def z_tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The factorized prior's quantized CDF tables (cdf, cdf_length, offset), one row per
        channel of z, as stored in the weights file (computed once at export, `update()`)."""
        eb = self.entropy_bottleneck
        return eb._quantized_cdf, eb._cdf_length, eb._offset

    def z_likelihoods(self, z: torch.Tensor, rounding=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_hat, likelihoods) of the factorized prior. rounding=None: compressai's (noise in
        training, rounding in eval); otherwise z is rounded around the medians by `rounding`,
        which may be a differentiable soft rounding (encoder-side refinement)."""
        eb = self.entropy_bottleneck
        if rounding is None:
            return eb(z)
        medians = self.z_medians().view(1, -1, 1, 1)
        z_hat = rounding(z - medians) + medians
        C = z_hat.shape[1]
        lik, _, _ = eb._likelihood(z_hat.transpose(0, 1).reshape(C, 1, -1))
        lik = eb.likelihood_lower_bound(lik).reshape(C, z_hat.shape[0], *z_hat.shape[2:]).transpose(0, 1)
        return z_hat, lik

    def rd_loss(self, x: torch.Tensor, quality: torch.Tensor, out: dict) -> dict:
        """Per-sample lambda * 255^2 * MSE + bpp, averaged over the batch (in float32, also
        when the forward pass ran under bfloat16 autocast); bpp alone (mse NaN) where `out`
        has no reconstruction (a rate-only pass)."""
        num_pixels = x.shape[2] * x.shape[3]
        bits = sum(torch.log(lik.float()).flatten(1).sum(1) for lik in out["likelihoods"].values())
        bpp = -bits / (math.log(2) * num_pixels)
        if "x_hat" not in out:
            return {"loss": bpp.mean(), "bpp": bpp.mean(), "mse": torch.tensor(float("nan"))}
        mse = (out["x_hat"].float() - x).pow(2).flatten(1).mean(1)
        lam = self.lambda_for(quality).to(x.dtype)
        loss = (lam * 255**2 * mse + bpp).mean()
        return {"loss": loss, "bpp": bpp.mean(), "mse": mse.mean()}


class MeanScaleHyperprior(VariableRate, nn.Module):
    """Balle-style GDN transforms, a factorized prior on z and a Gaussian N(mean, scale) on y."""

    likelihood = "gaussian"
    stride = 64  # g_a downsamples by 16, h_a by another 4

    def __init__(self, N: int = 96, M: int = 128, lambdas=DEFAULT_LAMBDAS):
        super().__init__()
        self.N, self.M = N, M
        self.lambdas = tuple(lambdas)
        levels = len(self.lambdas)
        self.g_a = nn.Sequential(
            conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True), deconv(N, 3))
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True), conv(N, N))
        self.h_s = nn.Sequential(
            deconv(N, M), nn.LeakyReLU(inplace=True),
            deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(M * 3 // 2, M * 2, stride=1, kernel_size=3))
        self.gain = GainUnit(levels, M, gain_init(self.lambdas))
        self.inverse_gain = GainUnit(levels, M, gain_init(self.lambdas, inverse=True))
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None, scale_bound=SCALE_BOUND)

    # --- the pieces the codec pipeline calls, in order -------------------------------
    def analysis(self, x: torch.Tensor, quality: torch.Tensor, run=apply) -> torch.Tensor:
        return run(self.g_a, x) * self.gain(quality)

    def hyper_analysis(self, y: torch.Tensor) -> torch.Tensor:
        return self.h_a(y)

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (means, scales) of the Gaussian on y; scales already lower-bounded."""
        scales, means = self.h_s(z_hat).chunk(2, 1)
        return means, scales.clamp_min(SCALE_BOUND)

    def synthesis(self, y_hat: torch.Tensor, quality: torch.Tensor, run=apply) -> torch.Tensor:
        return run(self.g_s, y_hat * self.inverse_gain(quality))

    # --- training --------------------------------------------------------------------
    def forward(self, x: torch.Tensor, quality: torch.Tensor) -> dict:
        """Training pass: noisy likelihoods for the rate, straight-through rounding for y_hat."""
        y = self.analysis(x, quality)
        return self.forward_latents(y, self.hyper_analysis(y), quality)

    def forward_latents(self, y: torch.Tensor, z: torch.Tensor, quality: torch.Tensor, rounding=None) -> dict:
        """The pass from given latents. rounding=None: as in training; otherwise `rounding`
        (a soft rounding, for refinement) gives z_hat, y_hat and the rates alike."""
        z_hat, z_lik = self.z_likelihoods(z, rounding)
        means, scales = self.hyper_synthesis(z_hat)
        if rounding is None:
            _, y_lik = self.gaussian_conditional(y, scales, means=means)
            y_hat = torch.round(y - means).detach() + (y - means) - (y - means).detach() + means
        else:
            y_hat = rounding(y - means) + means
            y_lik = self.gaussian_conditional.likelihood_lower_bound(
                self.gaussian_conditional._likelihood(y_hat, scales, means))
        x_hat = self.synthesis(y_hat, quality)
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik, "z": z_lik}}

    def coding_steps(self, z_hat: torch.Tensor, quality: torch.Tensor | None = None):
        """The coding protocol (models/coding.py): y in Y_STREAMS channel groups "y0".."y3",
        each under the Gaussian of the hyper synthesis. Returns y_hat."""
        means, scales = self.hyper_synthesis(z_hat)
        y_hat = torch.zeros_like(means)
        bounds = [round(i * self.M / Y_STREAMS) for i in range(Y_STREAMS + 1)]
        for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
            mask = torch.zeros(means.shape, dtype=torch.bool, device=means.device)
            mask[:, start:stop] = True
            values = yield CodingStep(f"y{i}", mask, {"mean": means[mask], "scale": scales[mask]}, "gaussian", True)
            y_hat = y_hat.masked_scatter(mask, values.to(y_hat.dtype))
        return y_hat
