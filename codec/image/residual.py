"""The residual layer: qualities above what a learned model's transforms can reach.

Why: the learned layer's top is capped by its transforms (mlic-medium stops near 35.7 dB on
Kodak) and its last rate points buy little quality per bit, while the error it leaves is
plain transform-coding material. So from coder version 8, a quality q above a model's
`base_quality` (its levels - 2) codes the learned layer at the base quality and the residual
x - x_hat on top: an orthonormal colour transform, 8x8 DCTs (scipy), one uniform step
64 * 2^(-0.6 (q - base)), and Laplace laws whose scale is a code per (plane, frequency) plus an
offset per context class (`_Context`: what the block and its neighbours held in the groups
coded before). On six Kodak images quality 8 gives 0.67 dB more than the learned layer's own
quality 8 at 16 % fewer bits, and the layer goes on to 40 dB at quality 10 and beyond
(benchmarks/residual_choices.py, docs/models.md).

The entropy coding never depends on x_hat, so pixels that differ by a rounding between CPUs
(the synthesis runs in float32) cannot break a stream; they only differ by a rounding in the
output too.

Section "residual" (per tile, after the tile's prefix), docs/format.md: a code per group
(plane, frequency), an offset per class, then the coded groups' parts of one rANS chain.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from codec import entropy
from codec.container import NcfError, pack_streams, unpack_streams

SINCE = 8          # the first coder version with the residual layer
EXTRA = 4          # qualities it adds above a model's levels
BLOCK = 8
PLANES = 3
GROUPS = PLANES * BLOCK * BLOCK
MAX_CODE = 144     # scale 2^13.875
CLASS_BOUNDS = np.array([1, 3, 9, 31])  # of a block's context (_Context)
CLASSES = len(CLASS_BOUNDS) + 1
OFFSETS = np.arange(-40, 25)  # the class offsets the encoder tries, in 1/8 octave
_SCALE_INDEX0 = 6 * 256   # the coder's scale index of 2^-4 (scale = 2^(-10 + i / 256))
_SCALE_INDEX_STEP = 32    # 1/8 octave
ROUNDING = 0.3     # the encoder rounds |c| / step up from .7, not .5: fewer +-1s that cost more than they give
# Orthonormal, so squared errors are the same in RGB and in these planes (one step fits all).
_COLOUR = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=np.float64)
_COLOUR /= np.linalg.norm(_COLOUR, axis=1, keepdims=True)


def base_quality(levels: int) -> float:
    """The learned layer's quality under every quality above it."""
    return float(max(1, levels - 2))


def max_quality(levels: int, version: int) -> float:
    """The highest quality of a model with `levels` trained rate points in files of this coder version."""
    return float(levels + EXTRA if version >= SINCE else levels)


def split(quality: float, levels: int, version: int) -> tuple[float, float | None]:
    """(the learned layer's quality, the residual's step or None) of a file's quality."""
    base = base_quality(levels)
    if version < SINCE or quality <= base:
        return quality, None
    return base, 64.0 * 2.0 ** (-0.6 * (quality - base))


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


class _Context:
    """Each block's class for the next group: how much the groups coded before it left in the
    block (twice) and in its four neighbours, sum |k|, cut at CLASS_BOUNDS. Why: detail is
    local, so a block whose earlier coefficients were large is likely to have large later ones
    (without classes, six Kodak images at qualities 6-10 took +2.5 % BD-rate, whole files:
    benchmarks/residual_choices.py)."""

    def __init__(self, blocks_high: int, blocks_wide: int):
        self.acc = np.zeros((blocks_high + 2, blocks_wide + 2), dtype=np.int64)

    def classes(self) -> np.ndarray:
        a = self.acc
        near = 2 * a[1:-1, 1:-1] + a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:]
        return np.searchsorted(CLASS_BOUNDS, near, side="right").ravel()

    def add(self, group: np.ndarray) -> None:
        self.acc[1:-1, 1:-1] += np.abs(group).reshape(self.acc.shape[0] - 2, -1)


def _symbol_codes(group_code: int, offsets: np.ndarray, classes: np.ndarray) -> dict:
    scale = _scale_codes(np.clip(group_code + offsets.astype(np.int64)[classes], 1, MAX_CODE))
    return {"mean": np.zeros_like(scale), "scale": scale}


def _fit(q: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a code per group, 0 where all zero; an offset per class), chosen by coordinate descent
    on the ideal bits of the coder's Laplace bins: scale code of a symbol = its group's code +
    its class's offset."""
    mags = np.abs(q)
    top = int(mags.max(initial=0))
    hist = np.bincount(((np.arange(GROUPS)[:, None] * CLASSES + classes) * (top + 1) + mags).ravel(),
                       minlength=GROUPS * CLASSES * (top + 1)).reshape(GROUPS, CLASSES, top + 1)
    scale_codes = _scale_codes(np.arange(1, MAX_CODE + 1))
    scales = entropy.dequantize_params("laplace", {"mean": np.zeros_like(scale_codes), "scale": scale_codes})["scale"]
    k = np.arange(top + 1, dtype=np.float64)
    edge = np.exp(-np.maximum(k - 0.5, 0)[None] / scales[:, None]) - np.exp(-(k + 0.5)[None] / scales[:, None])
    cost = -np.log2(np.maximum(np.where(k[None] == 0, edge, edge / 2), 1e-300))  # one sign of +-k
    bits = hist @ cost.T                                                            # (group, class, scale)
    coded = mags.any(axis=1)
    bits = bits[coded]
    group = np.argmin(bits.sum(axis=1), axis=1)
    offsets = np.zeros(CLASSES, dtype=np.int64)
    rows = np.arange(len(group))[:, None]
    for _ in range(3):
        for c in range(CLASSES):
            at = np.clip(group[:, None] + OFFSETS[None], 0, MAX_CODE - 1)
            offsets[c] = OFFSETS[np.argmin(bits[rows, c, at].sum(axis=0))]
        at = np.clip(np.arange(MAX_CODE)[None, :, None] + offsets[None, None], 0, MAX_CODE - 1)  # (1, S, C)
        group = np.argmin(bits[rows[:, :, None], np.arange(CLASSES)[None, None], at].sum(axis=2), axis=1)
    codes = np.zeros(GROUPS, dtype=np.uint8)
    codes[coded] = group + 1
    return codes, offsets.astype(np.int8)


def add(x_hat: np.ndarray, q: np.ndarray, step: float) -> np.ndarray:
    """The decoded tile: x_hat (h, w, 3 uint8) plus the residual coefficients q of `decode` at this step."""
    h, w = x_hat.shape[:2]
    ph, pw = _padded(h, w)
    planes = scipy.fft.idctn(_unblocks(q * step, ph, pw).reshape(PLANES, ph // BLOCK, BLOCK, pw // BLOCK, BLOCK),
                             axes=(2, 4), norm="ortho").reshape(PLANES, ph, pw)[:, :h, :w]
    rgb = np.tensordot(_COLOUR.T, planes, axes=1).transpose(1, 2, 0)
    del planes
    rgb += x_hat  # in place: a 1024 x 1024 tile's float64 planes are 25 MB each
    return np.clip(np.rint(rgb, out=rgb), 0, 255, out=rgb).astype(np.uint8)


def _quantized(x: np.ndarray, x_hat: np.ndarray, step: float) -> np.ndarray:
    """The residual's quantized coefficients (GROUPS, blocks); its float temporaries end here."""
    h, w = x.shape[:2]
    ph, pw = _padded(h, w)
    planes = np.tensordot(_COLOUR, (x.astype(np.float64) - x_hat).transpose(2, 0, 1), axes=1)
    planes = np.pad(planes, ((0, 0), (0, ph - h), (0, pw - w)), mode="edge")
    c = scipy.fft.dctn(planes.reshape(PLANES, ph // BLOCK, BLOCK, pw // BLOCK, BLOCK), axes=(2, 4), norm="ortho")
    del planes
    c = _blocks(c.reshape(PLANES, ph, pw))
    return (np.sign(c) * np.floor(np.abs(c) / step + ROUNDING)).astype(np.int32).reshape(GROUPS, -1)


def reconstruction(x: np.ndarray, x_hat: np.ndarray, step: float) -> np.ndarray:
    """The pixels `encode`'s section decodes to (what `reconstruct` and `--verify` compare with)."""
    return add(x_hat, _quantized(x, x_hat, step).reshape(PLANES, BLOCK * BLOCK, -1), step)


def encode(x: np.ndarray, x_hat: np.ndarray, step: float) -> bytes:
    """The section of the residual x - x_hat (both h x w x 3 uint8)."""
    ph, pw = _padded(*x.shape[:2])
    q = _quantized(x, x_hat, step)
    context = _Context(ph // BLOCK, pw // BLOCK)
    classes = np.empty(q.shape, dtype=np.uint8)
    for g in range(GROUPS):
        classes[g] = context.classes()
        context.add(q[g])
    codes, offsets = _fit(q, classes)
    chain = entropy.ChainEncoder()
    for g in np.flatnonzero(codes):
        chain.add("laplace", q[g], _symbol_codes(int(codes[g]), offsets, classes[g]))
    return codes.tobytes() + offsets.tobytes() + pack_streams(chain.finish())


def decode(data: bytes, h: int, w: int) -> np.ndarray:
    """The quantized coefficients (3, 64, blocks) of an h x w tile's residual section."""
    head = GROUPS + CLASSES
    if len(data) < head:
        raise NcfError(f"residual section of {len(data)} bytes is shorter than its {head} scale codes")
    codes = np.frombuffer(data[:GROUPS], dtype=np.uint8)
    offsets = np.frombuffer(data[GROUPS:head], dtype=np.int8)
    if codes.max() > MAX_CODE:
        raise NcfError(f"residual scale code {int(codes.max())} above {MAX_CODE}")
    parts = iter(unpack_streams(data[head:], int(np.count_nonzero(codes)), "residual section"))
    ph, pw = _padded(h, w)
    q = np.zeros((GROUPS, ph * pw // BLOCK ** 2), dtype=np.int32)
    context, chain = _Context(ph // BLOCK, pw // BLOCK), entropy.ChainDecoder()
    try:
        for g in range(GROUPS):
            if codes[g]:
                q[g] = chain.decode("laplace", next(parts), _symbol_codes(int(codes[g]), offsets, context.classes()))
                context.add(q[g])
        if codes.any():
            chain.finish()
    except entropy.EntropyCodingError as e:
        raise NcfError(f"residual stream does not decode: {e}") from None
    return q.reshape(PLANES, BLOCK * BLOCK, -1)
