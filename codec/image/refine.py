"""Encoder-side refinement of one image's latents (MLICv2's instance adaptation; Yang, Bamler
and Mandt 2020, "Improving inference for neural image compression").

The analysis transform is amortized: it gives good latents for images in general, not the
best ones for this image. `refine_latents` starts from its y and z and optimizes them for
this image's rate-distortion cost lambda * 255^2 * MSE + bpp with Adam, rounding by
stochastic Gumbel annealing (SGA): each value is softly rounded to its floor or ceiling
by a Gumbel-softmax whose temperature falls over the steps, so the optimization ends near
hard rounding. The decoder is unchanged: it sees ordinary latents.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from codec.errors import NeurocodecError
from models.likelihoods import LIKELIHOOD_BOUND

SGA_EPS = 1e-5
# `encode --effort` for images: refinement steps per level. On mlic-medium-gaussian (6 Kodak
# crops of 256 px, benchmarks/refine_gain.py, 2026-12-07) 10 steps saved 1.2 % (BD-rate) at ~15x
# the plain encode time, 25 steps 2.5 % at ~25x, 50 steps 2.7 %: too slow to be the default on a
# CPU, so `fast` and `default` are both the plain encode and `max` refines.
EFFORT_STEPS = {"fast": 0, "default": 0, "max": 50}


def effort_steps(effort: str) -> int:
    """Refinement steps of an effort level (NeurocodecError for an unknown one)."""
    try:
        return EFFORT_STEPS[effort]
    except KeyError:
        raise NeurocodecError(f"effort must be one of {', '.join(EFFORT_STEPS)}, not {effort!r}") from None


def sga_round(v: torch.Tensor, tau: float, generator: torch.Generator) -> torch.Tensor:
    """Soft rounding of v to floor(v) or floor(v) + 1: a 2-way Gumbel-softmax at temperature
    `tau` with logits -atanh(distance) (Yang et al. 2020, eq. 5), differentiable in v."""
    lo = torch.floor(v)
    frac = v - lo
    logits = torch.stack([-torch.atanh(frac.clamp(SGA_EPS - 1, 1 - SGA_EPS)),
                          -torch.atanh((1 - frac).clamp(SGA_EPS - 1, 1 - SGA_EPS))], -1) / tau
    u = torch.rand(logits.shape, generator=generator, dtype=v.dtype).clamp(1e-10, 1 - 1e-10)
    weights = torch.softmax((logits - torch.log(-torch.log(u))) / tau, -1)
    return lo + weights[..., 1]


def rd_cost(model, x: torch.Tensor, y, z, quality: torch.Tensor, rounding, h: int, w: int) -> torch.Tensor:
    """lambda * 255^2 * MSE + bpp (likelihood estimate) over the image's own h x w pixels."""
    out = model.forward_latents(y, z, quality, rounding)
    # clamped here too: weights exported in float16 before 2026-12-01 hold their bounds as 0
    bits = -sum(torch.log2(lik.clamp_min(LIKELIHOOD_BOUND)).sum() for lik in out["likelihoods"].values())
    mse = (out["x_hat"][..., :h, :w] - x[..., :h, :w]).pow(2).mean()
    return model.lambda_for(quality)[0] * 255 ** 2 * mse + bits / (h * w)


def refine_latents(model, x: torch.Tensor, quality: float, steps: int, h: int, w: int, *,
                   lr: float = 0.01, tau_start: float = 0.5, tau_end: float = 0.05, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, z) for x (1, 3, H, W, padded) at `quality` after `steps` SGA steps; x's first h x w
    pixels are the image. The result is never worse than the transform's own latents by
    the (hard-rounded) estimated RD cost: if refinement did not lower it, those are returned.
    Seeded, so an encode is repeatable on one machine and thread count."""
    q = torch.tensor([float(quality)])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        y0 = model.analysis(x, q)
        z0 = model.hyper_analysis(y0)
        start_cost = rd_cost(model, x, y0, z0, q, torch.round, h, w)
    y, z = y0.clone().requires_grad_(), z0.clone().requires_grad_()
    opt = torch.optim.Adam([y, z], lr=lr)
    with torch.enable_grad():
        for t in range(steps):
            tau = tau_start * (tau_end / tau_start) ** (t / max(steps - 1, 1))
            cost = rd_cost(model, x, y, z, q, lambda v: sga_round(v, tau, generator), h, w)
            opt.zero_grad()
            y.grad, z.grad = torch.autograd.grad(cost, [y, z])  # the weights get no gradients
            opt.step()
            if progress:
                progress(t + 1, steps)
    with torch.no_grad():
        end_cost = rd_cost(model, x, y, z, q, torch.round, h, w)
    if not math.isfinite(end_cost.item()) or end_cost >= start_cost:
        return y0, z0
    return y.detach(), z.detach()
