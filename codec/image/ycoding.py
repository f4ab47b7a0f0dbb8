"""Coding y: the one driver of the models' coding protocol (models/coding.py).

The model yields steps (which elements of y, under which law with which float parameters);
here each step's parameters are snapped to the coder's grid, its symbols taken (encoder) or
decoded (decoder), and the values the decoder will reconstruct sent back to the model, which
builds every later context from them. Gaussian and GG steps code round(y - snapped mean)
under the zero-mean law; GMM steps (coder version 5 on; multivariate-GMM steps from 6) round(y -
snapped mean of the heaviest component) under the snapped mixture shifted by that mean; mixture
steps of older versions round(y) under the snapped mixture. Values outside the coder's
support are escaped, never clamped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codec import entropy, exact
from codec.errors import NeurocodecError


@dataclass
class YStream:
    """One rANS stream of y: its name, coder family, int32 symbols and parameter codes."""
    name: str
    family: str
    symbols: np.ndarray
    codes: dict


def snap(family: str, residual: bool, params: dict, exact_grid: bool = False) -> tuple[dict, np.ndarray | float]:
    """Parameters snapped to the coder's grid: (codes the coder gets, offset of the symbols).
    `exact_grid` (coder version 4): snapped by comparisons only (codec.exact.quantize_params).

    Residual families code round(y - snapped mean) under the same law with mean 0, so the
    offset is the snapped mean; a residual mixture's offset is the snapped mean of its heaviest
    component (by weight code; the first of equal ones), and its means are shifted by it in
    integer codes, exactly; other mixtures code round(y) itself (offset 0)."""
    codes = (exact.quantize_params if exact_grid else entropy.quantize_params)(family, **params)
    if not residual:
        return codes, 0.0
    if family == "gmm":
        heaviest = codes["weight"].argmax(-1)[:, None]
        means = codes["mean"].astype(np.int64)
        limit = np.iinfo(np.int32).max  # the coder's mean codes are int32
        shifted = np.clip(means - np.take_along_axis(means, heaviest, -1), -limit, limit).astype(np.int32)
        offset = np.take_along_axis(entropy.dequantize_params(family, codes)["mean"], heaviest, -1)[:, 0]
        return {**codes, "mean": shifted}, offset
    snapped_means = entropy.dequantize_params(family, codes)["mean"]
    return {**codes, "mean": np.zeros_like(codes["mean"])}, snapped_means


def to_symbols(v: np.ndarray, what: str) -> np.ndarray:
    """round(v) as int32; values the coder cannot take are refused, never clamped (everything
    within +-2^30 is coded exactly, escaped where the law gives it no frequency)."""
    s = np.rint(v)
    if not np.all(np.abs(s) <= 2**30):  # also catches NaN
        raise NeurocodecError(f"latent {what} out of the codable range (+-2^30) or not finite: "
                              f"the model's weights are unusable for this image")
    return s.astype(np.int32)


def _drive(model, z_hat: torch.Tensor, quality: torch.Tensor, values_of, mixture_residuals: bool) -> torch.Tensor:
    """Run the model's coding steps; `values_of(step, codes, offset)` gives each step's values.
    `mixture_residuals`: mixture steps code residuals (pipeline.mixture_residuals)."""
    steps = model.coding_steps(z_hat, quality)
    step = next(steps)
    while True:
        residual = step.symbols_are_residuals and (step.family != "gmm" or mixture_residuals)
        codes, offset = snap(step.family, residual, step.params, exact.is_parameter_net(model))
        try:
            step = steps.send(torch.from_numpy(values_of(step, codes, offset)))
        except StopIteration as stop:
            return stop.value


def quantize_y(model, y: torch.Tensor, z_hat: torch.Tensor, quality: torch.Tensor,
               mixture_residuals: bool) -> tuple[list[YStream], torch.Tensor]:
    """The encoder's side: y's streams in coding order, and y_hat (what the decoder rebuilds)."""
    streams = []

    def values_of(step, codes, offset):
        symbols = to_symbols(y[step.mask].double().numpy() - offset, step.name)
        streams.append(YStream(step.name, step.family, symbols, codes))
        return symbols + offset

    return streams, _drive(model, z_hat, quality, values_of, mixture_residuals)


def decode_y(model, z_hat: torch.Tensor, quality: torch.Tensor, take, chain: entropy.ChainDecoder,
             mixture_residuals: bool) -> torch.Tensor:
    """The decoder's side: y_hat from the streams `take(name)` gives, in coding order."""
    def values_of(step, codes, offset):
        return chain.decode(step.family, take(step.name), codes) + offset

    return _drive(model, z_hat, quality, values_of, mixture_residuals)
