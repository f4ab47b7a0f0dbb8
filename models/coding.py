"""The coding protocol between an image model and the codec (`codec.image.ycoding`).

Every image model codes its latent y as a sequence of steps; the codec drives them, and a
model never calls the entropy coder. One protocol for every model: the mean-scale hyperprior
has four steps (channel groups), MLIC one per slice and checkerboard pass.

    y = model.analysis(x, q); z = model.hyper_analysis(y)
    z is table-coded with model.z_tables(): z_hat = round(z - m) + m, m = model.z_medians()
    gen = model.coding_steps(z_hat, q)
    step = next(gen)                       # CodingStep
    while True:
        ... code / decode the elements y[step.mask] with step.params ...
        try: step = gen.send(values)       # 1-D float tensor, y_hat of those elements
        except StopIteration as stop: y_hat = stop.value; break
    x_hat = model.synthesis(y_hat, q)

Each CodingStep names the next group of y elements (`mask`, a bool tensor of y's shape
(B, M, H, W)) and gives the coder's float parameters for exactly those elements, each of
shape (n,) (or (n, K) for mixtures), n = mask.sum(), in `y[mask]` order (row-major over
batch, channel, row, column). The values sent back must be in the same order and must be
those the decoder will reconstruct (symbol + snapped mean for residual families, the
symbol itself otherwise): the model builds every later context from them.
The generator computes with autograd on; callers wrap it in
torch.no_grad() / torch.inference_mode().
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CodingStep:
    """The next group of y elements to code.

    name    e.g. "y0" (hyperprior), "s3/anchor", "s3/nonanchor", "s0/anchor/j1" (mvgmm)
    mask    bool tensor shaped like y (B, M, H, W): the elements of this step
    params  coder parameters for exactly those elements, in y[mask] order: each (n,), or
            (n, K) for mixtures; names as `family`'s coding_values (gaussian/laplace:
            mean, scale; gg: mean, scale (= alpha), beta; gmm: weight, mean, scale)
    family  name of the univariate law the coder uses for this step ("gaussian",
            "laplace", "gg" or "gmm"; mvgmm steps are "gmm")
    symbols_are_residuals  True: symbols are round(y - mean), values = symbol + mean;
            False: symbols are round(y), values = symbol
    """

    name: str
    mask: torch.Tensor
    params: dict
    family: str
    symbols_are_residuals: bool
