"""neurocodec entropy coding: rANS with table mode and on-the-fly parametric CDFs.

Parametric semantics: a symbol ``k`` (any int32) is coded with the probability of the
interval ``[k - 0.5, k + 0.5)`` under the continuous density with location ``mean``
(and ``scale``/``beta``/mixture parameters), after the parameters have been snapped to
the coder's grid with :func:`quantize_params`.  Every integer in a support around the
mode gets a non-zero frequency (leaky quantization); other values are escaped and coded
exactly.  To code residuals the CompressAI way (``symbol = round(y - mean)``), pass the
codes of a zero mean, or of the residual's fractional offset.

Families (``scale`` is the standard deviation for ``gaussian`` and ``gmm``, the Laplace
``b`` for ``laplace``, and ``alpha`` in ``exp(-|x/alpha|**beta)`` for ``gg``).

Parameter grids (see :data:`GRID`):
  * mean: int32 fixed point, ``mean = code / 2**16`` (clamped to about +-32768);
  * scale: index ``i`` on a log2 grid, ``scale = 2**(-10 + i/256)``, ``i`` in
    ``[0, 6144]`` (9.77e-4 .. 16384; values outside are clamped);
  * beta: index ``j`` on a log grid of 256 points over ``[0.3, 4]`` (clamped);
  * weight: fixed point, ``code = round(65536 * w / sum(w))``; the coder normalizes.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from . import _rans

__all__ = [
    "EntropyCodingError",
    "FAMILIES",
    "PRECISION",
    "GRID",
    "quantize_params",
    "dequantize_params",
    "encode",
    "decode",
    "encode_table",
    "decode_table",
    "ChainEncoder",
    "ChainDecoder",
]


class EntropyCodingError(ValueError):
    """Invalid parameters/symbols, or a corrupt or truncated stream."""


FAMILIES = ("gaussian", "laplace", "gg", "gmm")
_FAMILY_ID = {"gaussian": 0, "laplace": 1, "gg": 2, "gmm": 3}
_KEYS = {
    "gaussian": ("mean", "scale"),
    "laplace": ("mean", "scale"),
    "gg": ("mean", "scale", "beta"),
    "gmm": ("weight", "mean", "scale"),
}

#: probability precision in bits of the parametric coder (see docs/benchmarks.md)
PRECISION: int = int(_rans.PRECISION)
#: precision of CompressAI-style tables accepted by the table mode by default
TABLE_PRECISION = 16
MAX_K = int(_rans.MAX_K)

_SCALES = _rans.scale_table()
_SCALES.setflags(write=False)
_BETAS = _rans.beta_table()
_BETAS.setflags(write=False)
_MEAN_ONE = float(1 << int(_rans.MEAN_FRAC_BITS))
_MEAN_MAX_CODE = 2**31 - 1
_N_SCALES = int(_rans.N_SCALES)
_N_BETAS = int(_rans.N_BETAS)
_SCALE_STEPS = int(_rans.SCALE_STEPS_PER_OCTAVE)
_SCALE_LOG2_MIN = int(_rans.SCALE_LOG2_MIN)
_BETA_MIN = float(_rans.BETA_MIN)
_BETA_MAX = float(_rans.BETA_MAX)
_WEIGHT_ONE = int(_rans.WEIGHT_ONE)

GRID = {
    "precision": PRECISION,
    "mean_frac_bits": int(_rans.MEAN_FRAC_BITS),
    "scale_log2_min": _SCALE_LOG2_MIN,
    "scale_steps_per_octave": _SCALE_STEPS,
    "n_scales": _N_SCALES,
    "scale_min": float(_SCALES[0]),
    "scale_max": float(_SCALES[-1]),
    "n_betas": _N_BETAS,
    "beta_min": _BETA_MIN,
    "beta_max": _BETA_MAX,
    "weight_one": _WEIGHT_ONE,
    "max_k": MAX_K,
}


def _as_float_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach()
        if x.dtype.is_floating_point and x.dtype not in (_torch_f32(), _torch_f64()):
            x = x.float()
        x = x.cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise EntropyCodingError(f"{name}: expected a float array, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise EntropyCodingError(f"{name}: contains NaN or infinite values")
    return a


def _torch_f32():
    import torch

    return torch.float32


def _torch_f64():
    import torch

    return torch.float64


def _check_family(family: str) -> str:
    if family not in _FAMILY_ID:
        raise EntropyCodingError(f"unknown family {family!r}; expected one of {FAMILIES}")
    return family


def _check_keys(family: str, d: Dict[str, Any]) -> None:
    want = set(_KEYS[family])
    if set(d) != want:
        raise EntropyCodingError(f"{family}: expected parameters {sorted(want)}, got {sorted(d)}")


def quantize_params(family: str, **params: Any) -> Dict[str, np.ndarray]:
    """Snap float likelihood parameters to the coder's integer grid (vectorized).

    Returns int32 code arrays with the same keys and shapes.  Encoder and decoder must
    both call this (or share the codes) so that they see identical parameters.
    """
    _check_family(family)
    _check_keys(family, params)
    arrs = {k: _as_float_array(v, k) for k, v in params.items()}
    shapes = {a.shape for a in arrs.values()}
    if len(shapes) != 1:
        raise EntropyCodingError(f"{family}: parameter shapes differ: { {k: a.shape for k, a in arrs.items()} }")
    out: Dict[str, np.ndarray] = {}
    if family == "gmm":
        out["weight"] = mixture_weight_codes(arrs["weight"])
    m = arrs["mean"]
    out["mean"] = np.clip(np.rint(m * _MEAN_ONE), -_MEAN_MAX_CODE, _MEAN_MAX_CODE).astype(np.int32)
    sc = arrs["scale"]
    if np.any(sc <= 0):
        raise EntropyCodingError("scale must be > 0")
    idx = np.rint((np.log2(sc) - _SCALE_LOG2_MIN) * _SCALE_STEPS)
    out["scale"] = np.clip(idx, 0, _N_SCALES - 1).astype(np.int32)
    if family == "gg":
        b = arrs["beta"]
        if np.any(b <= 0):
            raise EntropyCodingError("gg: beta must be > 0")
        b = np.clip(b, _BETA_MIN, _BETA_MAX)
        j = np.rint(np.log(b / _BETA_MIN) * ((_N_BETAS - 1) / np.log(_BETA_MAX / _BETA_MIN)))
        out["beta"] = np.clip(j, 0, _N_BETAS - 1).astype(np.int32)
    return {k: np.asarray(out[k], dtype=np.int32) for k in _KEYS[family]}


def mixture_weight_codes(weight: np.ndarray, in_component_order: bool = False) -> np.ndarray:
    """Mixture weights (..., K) as codes: rint(w * (WEIGHT_ONE / s)), s the weights' sum over K
    (NumPy's pairwise sum, or `in_component_order` for codec.exact: one fixed order of IEEE
    additions on every build)."""
    shape = weight.shape
    if len(shape) < 1 or not 1 <= shape[-1] <= MAX_K:
        raise EntropyCodingError(f"gmm: trailing component axis K must be in 1..{MAX_K}, got shape {shape}")
    if np.any(weight < 0):
        raise EntropyCodingError("gmm: negative mixture weight")
    if in_component_order:
        total = weight[..., 0]
        for k in range(1, shape[-1]):
            total = total + weight[..., k]
    else:
        total = weight.sum(axis=-1)
    if np.any(total <= 0):
        raise EntropyCodingError("gmm: all mixture weights of a symbol are zero")
    return np.rint(weight * (_WEIGHT_ONE / total)[..., None]).astype(np.int32)


def _code_array(codes: Dict[str, Any], key: str, family: str) -> np.ndarray:
    a = codes[key]
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise EntropyCodingError(f"{family}: code array {key!r} must be integer, got {a.dtype}")
    if a.dtype != np.int32:
        if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
            raise EntropyCodingError(f"{family}: code array {key!r} out of int32 range")
        a = a.astype(np.int32)
    return np.asarray(a, order="C")


def _check_codes(family: str, codes: Dict[str, Any]) -> Dict[str, np.ndarray]:
    _check_family(family)
    if not isinstance(codes, dict):
        raise EntropyCodingError("codes must be a dict of integer arrays")
    _check_keys(family, codes)
    c = {k: _code_array(codes, k, family) for k in _KEYS[family]}
    shapes = {a.shape for a in c.values()}
    if len(shapes) != 1:
        raise EntropyCodingError(f"{family}: code shapes differ: { {k: a.shape for k, a in c.items()} }")
    return c


def _value_checks(family: str, c: Dict[str, np.ndarray]) -> None:
    sc = c["scale"]
    if sc.size and (sc.min() < 0 or sc.max() >= _N_SCALES):
        raise EntropyCodingError(f"scale codes must be in [0, {_N_SCALES})")
    if family == "gg":
        b = c["beta"]
        if b.size and (b.min() < 0 or b.max() >= _N_BETAS):
            raise EntropyCodingError(f"beta codes must be in [0, {_N_BETAS})")
    if family == "gmm":
        w = c["weight"]
        if w.size and (w.min() < 0 or w.max() > _WEIGHT_ONE):
            raise EntropyCodingError(f"weight codes must be in [0, {_WEIGHT_ONE}]")
        if w.size and np.any(w.astype(np.int64).sum(axis=-1) == 0):
            raise EntropyCodingError("all mixture weight codes of a symbol are zero")


def dequantize_params(family: str, codes: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """The exact float64 parameter values the coder uses for ``codes``."""
    c = _check_codes(family, codes)
    _value_checks(family, c)
    out: Dict[str, np.ndarray] = {}
    if family == "gmm":
        w = c["weight"].astype(np.float64)
        out["weight"] = w * (1.0 / w.sum(axis=-1, keepdims=True))  # same operations as the coder
    out["mean"] = c["mean"].astype(np.float64) / _MEAN_ONE
    out["scale"] = _SCALES[c["scale"]]
    if family == "gg":
        out["beta"] = _BETAS[c["beta"]]
    return {k: np.asarray(out[k], dtype=np.float64) for k in _KEYS[family]}


def _param_shape(family: str, c: Dict[str, np.ndarray]) -> tuple:
    shape = c[_KEYS[family][0]].shape
    if family == "gmm":
        if len(shape) < 1 or not 1 <= shape[-1] <= MAX_K:
            raise EntropyCodingError(f"gmm: trailing component axis K must be in 1..{MAX_K}, got shape {shape}")
        return shape[:-1]
    return shape


def _prep_symbols(symbols: Any, shape: tuple) -> np.ndarray:
    if hasattr(symbols, "detach"):
        symbols = symbols.detach().cpu().numpy()
    s = np.asarray(symbols)
    if s.dtype.kind not in "iu":
        raise EntropyCodingError(f"symbols must be an integer array (int32), got {s.dtype}")
    if s.shape != tuple(shape):
        raise EntropyCodingError(f"symbols shape {s.shape} does not match parameter shape {tuple(shape)}")
    if s.dtype != np.int32:
        if s.size and (s.min() < np.iinfo(np.int32).min or s.max() > np.iinfo(np.int32).max):
            raise EntropyCodingError("symbols out of int32 range")
        s = s.astype(np.int32)
    return np.asarray(s, order="C")


def _stream_args(family: str, codes: Dict[str, Any]):
    c = _check_codes(family, codes)
    shape = _param_shape(family, c)
    K = c["weight"].shape[-1] if family == "gmm" else 1
    # value ranges are checked in C++ (before any coding), raising EntropyCodingError
    return shape, [c[k].reshape(-1) for k in _KEYS[family]], K


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except EntropyCodingError:
        raise
    except (ValueError, RuntimeError) as e:  # _rans.CodingError derives from ValueError
        raise EntropyCodingError(str(e)) from None


def _encode_streams(family, symbols_list, codes_list, precision, states=None, edge=True):
    """[(bytes, state after coding)] per stream; `states`: carried states (0 or None: none)."""
    _check_family(family)
    if len(symbols_list) != len(codes_list):
        raise EntropyCodingError("symbols and codes lists differ in length")
    syms, params, Ks = [], [], []
    for s, c in zip(symbols_list, codes_list):
        shape, p, K = _stream_args(family, c)
        syms.append(_prep_symbols(s, shape).reshape(-1))
        params.append(p)
        Ks.append(K)
    return _call(_rans.encode_param, _FAMILY_ID[family], syms, params, Ks, int(precision),
                 states or [0] * len(syms), bool(edge))


def _as_bytes(d) -> bytes:
    if isinstance(d, (bytearray, memoryview)):
        d = bytes(d)
    if not isinstance(d, bytes):
        raise EntropyCodingError("data must be bytes")
    return d


def _decode_streams(family, data_list, codes_list, precision, states=None, edge=True):
    """[(symbols, state after decoding)] per stream."""
    _check_family(family)
    if len(data_list) != len(codes_list):
        raise EntropyCodingError("data and codes lists differ in length")
    datas, params, sizes, Ks, shapes = [], [], [], [], []
    for d, c in zip(data_list, codes_list):
        shape, p, K = _stream_args(family, c)
        datas.append(_as_bytes(d))
        params.append(p)
        sizes.append(int(np.prod(shape, dtype=np.int64)))
        Ks.append(K)
        shapes.append(shape)
    outs = _call(_rans.decode_param, _FAMILY_ID[family], datas, params, sizes, Ks, int(precision),
                 states or [0] * len(datas), bool(edge))
    return [(o.reshape(shape), state) for (o, state), shape in zip(outs, shapes)]


def encode(family: str, symbols: np.ndarray, codes: Dict[str, Any]) -> bytes:
    """Encode int32 ``symbols`` (shape S) with per-symbol parameter codes (shape S, +K for gmm)."""
    return _encode_streams(family, [symbols], [codes], PRECISION)[0][0]


def decode(family: str, data: bytes, codes: Dict[str, Any]) -> np.ndarray:
    """Decode the int32 symbols (shape S) of one stream produced by :func:`encode`."""
    return _decode_streams(family, [data], [codes], PRECISION)[0][0]


def _table_arrays(indexes, cdfs, cdf_lengths, offsets):
    def i32(x, name, ndim=None):
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        a = np.asarray(x)
        if a.dtype.kind not in "iu":
            raise EntropyCodingError(f"{name} must be an integer array, got {a.dtype}")
        if ndim is not None and a.ndim != ndim:
            raise EntropyCodingError(f"{name} must be {ndim}-D, got shape {a.shape}")
        if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
            raise EntropyCodingError(f"{name} out of int32 range")
        return np.asarray(a, dtype=np.int32, order="C")

    idx = i32(indexes, "indexes")
    c = i32(cdfs, "cdfs", 2)
    lengths = i32(cdf_lengths, "cdf_lengths").reshape(-1)
    offs = i32(offsets, "offsets").reshape(-1)
    if lengths.shape[0] != c.shape[0] or offs.shape[0] != c.shape[0]:
        raise EntropyCodingError("cdf_lengths and offsets must have one entry per cdf row")
    return idx, c, lengths, offs


def encode_table(symbols, indexes, cdfs, cdf_lengths, offsets, precision: int = TABLE_PRECISION) -> bytes:
    """Table mode, same semantics as CompressAI's ``RansEncoder.encode_with_indexes``.

    ``value = symbol - offsets[index]``; values outside ``[0, cdf_length - 2)`` (and
    values whose table frequency is zero) go through the escape slot (the last CDF
    interval) and are coded exactly.  CDFs are ``int32[T, L]`` with ``cdf[0] = 0`` and
    ``cdf[cdf_length - 1] = 2**precision`` (16 for CompressAI).
    """
    return _encode_table(symbols, indexes, cdfs, cdf_lengths, offsets, precision)[0]


def _encode_table(symbols, indexes, cdfs, cdf_lengths, offsets, precision, state=0, edge=True):
    idx, c, lengths, offs = _table_arrays(indexes, cdfs, cdf_lengths, offsets)
    s = _prep_symbols(symbols, idx.shape)
    return _call(_rans.encode_table, s.reshape(-1), idx.reshape(-1), c, lengths, offs, int(precision), state, edge)


def decode_table(data: bytes, indexes, cdfs, cdf_lengths, offsets, precision: int = TABLE_PRECISION) -> np.ndarray:
    """Inverse of :func:`encode_table`; returns int32 symbols with the shape of ``indexes``."""
    return _decode_table(data, indexes, cdfs, cdf_lengths, offsets, precision)[0]


def _decode_table(data, indexes, cdfs, cdf_lengths, offsets, precision, state=0, edge=True):
    idx, c, lengths, offs = _table_arrays(indexes, cdfs, cdf_lengths, offsets)
    out, state = _call(_rans.decode_table, _as_bytes(data), idx.reshape(-1), c, lengths, offs, int(precision),
                       state, edge)
    return out.reshape(idx.shape), state


class ChainEncoder:
    """Several streams (parametric or table mode) coded as the parts of one rANS chain.

    Every stream of a file used to end with the coder's 8-byte state, most of it the initial
    state the decoder checks it returns to. In a chain only the first part carries a state:
    each later part starts from the state the part before it ended in, so a tile of 9 streams
    spends one flush instead of nine (docs/format.md). The parts stay separate byte strings.
    Add parts in the order they will be decoded; :meth:`finish` codes them last to first.
    ``chained=False`` makes every part a self-contained stream (coder versions 1 and 2).
    """

    def __init__(self, chained: bool = True):
        self.chained = chained
        self._parts: list = []

    def add(self, family: str, symbols: np.ndarray, codes: Dict[str, Any]) -> None:
        self._parts.append(lambda state, flush: _encode_streams(
            family, [symbols], [codes], PRECISION, [state], flush)[0])

    def add_table(self, symbols, indexes, cdfs, cdf_lengths, offsets, precision: int = TABLE_PRECISION) -> None:
        self._parts.append(lambda state, flush: _encode_table(
            symbols, indexes, cdfs, cdf_lengths, offsets, precision, state, flush))

    def finish(self) -> List[bytes]:
        """The parts' bytes, in decoding order."""
        out, state = [], 0
        for i in reversed(range(len(self._parts))):
            data, end = self._parts[i](state, i == 0 or not self.chained)
            state = end if self.chained else 0
            out.append(data)
        return out[::-1]


class ChainDecoder:
    """Decodes the parts of a :class:`ChainEncoder`'s chain in order; :meth:`finish` checks
    that the chain ended where its encoder began (a part that leaves words unread, or a chain
    that ends elsewhere, is a corrupt stream: EntropyCodingError)."""

    def __init__(self, chained: bool = True):
        self.chained = chained
        self._state = 0  # the state the next part starts from (0: its own flushed state)

    def _carry(self, state: int) -> None:
        self._state = state if self.chained else 0

    def decode(self, family: str, data: bytes, codes: Dict[str, Any]) -> np.ndarray:
        out, state = _decode_streams(family, [data], [codes], PRECISION, [self._state], not self.chained)[0]
        self._carry(state)
        return out

    def decode_table(self, data: bytes, indexes, cdfs, cdf_lengths, offsets,
                     precision: int = TABLE_PRECISION) -> np.ndarray:
        out, state = _decode_table(data, indexes, cdfs, cdf_lengths, offsets, precision, self._state,
                                   not self.chained)
        self._carry(state)
        return out

    def finish(self) -> None:
        if self.chained and self._state != _rans.RANS_L:
            raise EntropyCodingError("corrupt or truncated stream (the chain does not end at the initial state)")
