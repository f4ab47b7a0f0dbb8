"""The residual layer: qualities above what a learned model's transforms can reach.

Why: the learned layer's top is capped by its transforms (mlic-medium stops near 35.7 dB on
Kodak) and its last rate points buy little quality per bit, while the error it leaves is
plain transform-coding material. So from coder version 8, a quality q above a model's
`base_quality` (its levels - 3) codes the learned layer at the base quality and the residual
x - x_hat on top: an orthonormal colour transform, 8x8 DCTs (scipy), one uniform step
64 * 2^(-(q - base) / 2), and each (plane, frequency) under its own Laplace law, one rANS stream
per tile. On six Kodak images this gave the same PSNR as the learned layer's quality 7 at 13 %
fewer bits and went on to 38 dB and beyond (docs/results.md).

The entropy coding never depends on x_hat, so pixels that differ by a rounding between CPUs
(the synthesis runs in float32) cannot break a stream; they only differ by a rounding in the
output too.

Section "residual" (per tile, after the tile's prefix): PLANES * BLOCK^2 bytes, one per
(plane, frequency) in plane-major, row-major order: 0 = every coefficient zero (not coded),
j in 1..MAX_CODE = Laplace scale 2^(-4 + (j - 1) / 8); then the rANS stream of the coded
groups' coefficients, group after group, each over the tile's blocks in raster order.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from codec import entropy
from codec.container import NcfError

SINCE = 8          # the first coder version with the residual layer
EXTRA = 4          # qualities it adds above a model's levels
BLOCK = 8
PLANES = 3
GROUPS = PLANES * BLOCK * BLOCK
MAX_CODE = 144     # scale 2^13.875
_SCALE_INDEX0 = 6 * 256   # the coder's scale index of 2^-4 (scale = 2^(-10 + i / 256))
_SCALE_INDEX_STEP = 32    # 1/8 octave
ROUNDING = 0.3     # the encoder rounds |c| / step up from .7, not .5: fewer +-1s that cost more than they give
# Orthonormal, so squared errors are the same in RGB and in these planes (one step fits all).
_COLOUR = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=np.float64)
_COLOUR /= np.linalg.norm(_COLOUR, axis=1, keepdims=True)


def base_quality(levels: int) -> float:
    """The learned layer's quality under every quality above it."""
    return float(max(1, levels - 3))


def max_quality(levels: int, version: int) -> float:
    """The highest quality of a model with `levels` trained rate points in files of this coder version."""
    return float(levels + EXTRA if version >= SINCE else levels)


def split(quality: float, levels: int, version: int) -> tuple[float, float | None]:
    """(the learned layer's quality, the residual's step or None) of a file's quality."""
    base = base_quality(levels)
    if version < SINCE or quality <= base:
        return quality, None
    return base, 64.0 * 2.0 ** (-(quality - base) / 2)


def _padded(h: int, w: int) -> tuple[int, int]:
    return -(-h // BLOCK) * BLOCK, -(-w // BLOCK) * BLOCK


def _blocks(planes: np.ndarray) -> np.ndarray:
    """(3, H, W) -> (3, 64, H/8 * W/8): each (plane, frequency) over the blocks in raster order."""
    p, h, w = planes.shape
    b = planes.reshape(p, h // BLOCK, BLOCK, w // BLOCK, BLOCK).transpose(0, 2, 4, 1, 3)
    return b.reshape(p, BLOCK * BLOCK, -1)


def _unblocks(coefficients: np.ndarray, h: int, w: int) -> np.ndarray:
    p = coefficients.shape[0]
    b = coefficients.reshape(p, BLOCK, BLOCK, h // BLOCK, w // BLOCK).transpose(0, 3, 1, 4, 2)
    return b.reshape(p, h, w)


def _scale_codes(j: np.ndarray) -> np.ndarray:
    return (_SCALE_INDEX0 + _SCALE_INDEX_STEP * (j.astype(np.int64) - 1)).astype(np.int32)


def _best_codes(q: np.ndarray) -> np.ndarray:
    """Per group (rows of q), the scale code 1..MAX_CODE with the fewest ideal bits (0: all zero)."""
    mags = np.abs(q)
    top = int(mags.max(initial=0))
    hist = np.stack([np.bincount(m, minlength=top + 1) for m in mags])              # (G, top + 1)
    scales = entropy.dequantize_params("laplace", {"mean": np.zeros(MAX_CODE, np.int32),
                                                  "scale": _scale_codes(np.arange(1, MAX_CODE + 1))})["scale"]
    k = np.arange(top + 1, dtype=np.float64)
    edge = np.exp(-np.maximum(k - 0.5, 0)[None] / scales[:, None]) - np.exp(-(k + 0.5)[None] / scales[:, None])
    p = np.where(k[None] == 0, edge, edge / 2)                                        # one sign of +-k
    bits = hist @ -np.log2(np.maximum(p, 1e-300)).T                                 # (G, MAX_CODE)
    codes = 1 + np.argmin(bits, axis=1)
    return np.where(hist[:, 1:].sum(axis=1) > 0, codes, 0).astype(np.uint8)


def add(x_hat: np.ndarray, q: np.ndarray, step: float) -> np.ndarray:
    """The decoded tile: x_hat (h, w, 3 uint8) plus the residual coefficients q of `decode` at this step."""
    h, w = x_hat.shape[:2]
    ph, pw = _padded(h, w)
    planes = scipy.fft.idctn(_unblocks(q * step, ph, pw).reshape(PLANES, ph // BLOCK, BLOCK, pw // BLOCK, BLOCK),
                             axes=(2, 4), norm="ortho").reshape(PLANES, ph, pw)[:, :h, :w]
    rgb = np.tensordot(_COLOUR.T, planes, axes=1).transpose(1, 2, 0)
    return np.clip(np.rint(x_hat + rgb), 0, 255).astype(np.uint8)


def encode(x: np.ndarray, x_hat: np.ndarray, step: float) -> tuple[bytes, np.ndarray]:
    """The section of the residual x - x_hat (both h x w x 3 uint8) and the pixels it decodes to."""
    h, w = x.shape[:2]
    ph, pw = _padded(h, w)
    r = (x.astype(np.float64) - x_hat).transpose(2, 0, 1)
    planes = np.pad(np.tensordot(_COLOUR, r, axes=1), ((0, 0), (0, ph - h), (0, pw - w)), mode="edge")
    c = _blocks(scipy.fft.dctn(planes.reshape(PLANES, ph // BLOCK, BLOCK, pw // BLOCK, BLOCK),
                               axes=(2, 4), norm="ortho").reshape(PLANES, ph, pw))
    q = (np.sign(c) * np.floor(np.abs(c) / step + ROUNDING)).astype(np.int32).reshape(GROUPS, -1)
    codes = _best_codes(q)
    coded = codes > 0
    symbols = q[coded]
    scale = np.repeat(_scale_codes(codes[coded]), symbols.shape[1]).reshape(symbols.shape)
    stream = entropy.encode("laplace", symbols, {"mean": np.zeros_like(scale), "scale": scale})
    q[~coded] = 0
    return codes.tobytes() + stream, add(x_hat, q.reshape(PLANES, BLOCK * BLOCK, -1), step)


def decode(data: bytes, h: int, w: int) -> np.ndarray:
    """The quantized coefficients (3, 64, blocks) of an h x w tile's residual section."""
    if len(data) < GROUPS:
        raise NcfError(f"residual section of {len(data)} bytes is shorter than its {GROUPS} scale codes")
    codes = np.frombuffer(data[:GROUPS], dtype=np.uint8)
    if codes.max() > MAX_CODE:
        raise NcfError(f"residual scale code {int(codes.max())} above {MAX_CODE}")
    ph, pw = _padded(h, w)
    q = np.zeros((GROUPS, ph * pw // BLOCK ** 2), dtype=np.int32)
    coded = codes > 0
    scale = np.repeat(_scale_codes(codes[coded]), q.shape[1]).reshape(-1, q.shape[1])
    try:
        q[coded] = entropy.decode("laplace", bytes(data[GROUPS:]), {"mean": np.zeros_like(scale), "scale": scale})
    except entropy.EntropyCodingError as e:
        raise NcfError(f"residual stream does not decode: {e}") from None
    return q.reshape(PLANES, BLOCK * BLOCK, -1)
