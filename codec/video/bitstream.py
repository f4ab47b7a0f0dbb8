"""The video file's sections as bytes: field reading, integer tensors coded with one
parametric law each, and group payloads (the checks of a whole file: codec.video.codec.parse).

File layout (docs/video.md has the byte-level description):
  header: media=video, model="hnerv", weights_hash = sha256(arch section)[:8],
          width/height (crop), pad_width/pad_height (the network's output size), rgb8,
          quality, coder {family, precision, version}, frames, fps, extra {group, groups}
  "arch":   uvarints: layout version, bits, c_emb, emb_h, emb_w, n_blocks, strides,
            channels, kernels, head_k (codec.video.arch)
  "wsteps": one step code (u8) per output channel of every decoder tensor (fixed for
            the clip; step = models.inr.step_from_code)
  "g0".."gN": per group: frame count, then per decoder tensor the Laplace parameter codes
            and the rANS stream of its integer weights (group 0) or integer weight deltas
            (later groups), then the embeddings' per-channel step codes, parameter codes
            and stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from codec import entropy
from codec.container import Cursor, NcfError, encode_svarint, encode_uvarint, zigzag_decode
from models.inr import step_from_code


class FieldReader:
    """The container's bounds-checked :class:`Cursor` plus what the video
    sections need on top: a range check on every field and errors that name
    the section."""

    def __init__(self, data: bytes, what: str):
        self.cur, self.what = Cursor(memoryview(data)), what

    def _checked(self, read):
        try:
            return read()
        except NcfError as e:
            raise NcfError(f"{self.what}: {e}") from None

    def uvarint(self, field: str, lo: int = 0, hi: int = 2 ** 63) -> int:
        value = self._checked(lambda: self.cur.uvarint(field))
        if not lo <= value <= hi:
            raise NcfError(f"{self.what}: {field} = {value} outside {lo}..{hi}")
        return value

    def svarint(self, field: str) -> int:
        return zigzag_decode(self.uvarint(field))

    def raw(self, n: int, field: str) -> bytes:
        return bytes(self._checked(lambda: self.cur.take(n, field)))

    def length_prefixed(self, field: str) -> bytes:
        return self.raw(self.uvarint(field + " length"), field)

    def done(self) -> None:
        if self.cur.remaining:
            raise NcfError(f"{self.what}: {self.cur.remaining} unparsed bytes")


_FAMILIES = ("gaussian", "laplace", "gg")  # family byte of a coded tensor -> entropy family
_TEMPLATES: dict = {}


def _param_template(family: str) -> dict:
    if family not in _TEMPLATES:
        extra = {"beta": np.ones(1)} if family == "gg" else {}
        _TEMPLATES[family] = entropy.quantize_params(family, mean=np.zeros(1), scale=np.ones(1), **extra)
    return _TEMPLATES[family]


def _candidates(q: np.ndarray):
    """(family, params) fits tried for one tensor; the shortest stream wins."""
    mean = float(q.mean()) if q.size else 0.0
    std = float(q.std()) if q.size else 1.0
    mad = float(np.abs(q - mean).mean()) if q.size else 1.0
    yield "laplace", dict(mean=mean, scale=max(mad, 1e-3))
    yield "gaussian", dict(mean=mean, scale=max(std, 1e-3))
    for beta in (0.6, 1.5, 3.0):
        # generalized Gaussian exp(-|x/alpha|^beta): variance = alpha^2 G(3/b) / G(1/b)
        alpha = std * math.sqrt(math.gamma(1 / beta) / math.gamma(3 / beta))
        yield "gg", dict(mean=mean, scale=max(alpha, 1e-3), beta=beta)


def encode_ints(q: np.ndarray) -> bytes:
    """Integer tensor -> family byte, svarint parameter codes, bytes[n] rANS stream.

    One parametric density per tensor (Laplace, Gaussian or generalized Gaussian, whichever
    codes it shortest), its parameters stored as the coder's own integer codes.
    """
    q = np.ascontiguousarray(q, dtype=np.int32).ravel()
    best = None
    for family, params in _candidates(q):
        codes = entropy.quantize_params(family, **{k: np.array([v]) for k, v in params.items()})
        scalar = {k: int(np.asarray(v).ravel()[0]) for k, v in codes.items()}
        full = {k: np.full(q.shape, scalar[k], dtype=np.asarray(codes[k]).dtype) for k in codes}
        stream = entropy.encode(family, q, full)
        blob = (bytes([_FAMILIES.index(family)]) + b"".join(encode_svarint(scalar[k]) for k in sorted(scalar))
                + encode_uvarint(len(stream)) + stream)
        if best is None or len(blob) < len(best):
            best = blob
    return best


def decode_ints(r: FieldReader, n: int, field: str) -> np.ndarray:
    fam_id = r.uvarint(f"{field} family", 0, len(_FAMILIES) - 1)
    family = _FAMILIES[fam_id]
    template = _param_template(family)
    vals = {k: r.svarint(f"{field} {k} code") for k in sorted(template)}
    stream = r.length_prefixed(f"{field} stream")
    full = {}
    for k, v in vals.items():
        dt = np.asarray(template[k]).dtype
        info = np.iinfo(dt) if np.issubdtype(dt, np.integer) else None
        if info is not None and not info.min <= v <= info.max:
            raise NcfError(f"{field}: parameter code {k}={v} out of range")
        full[k] = np.full(n, v, dtype=dt)
    try:
        out = entropy.decode(family, stream, full)
    except entropy.EntropyCodingError as e:
        raise NcfError(f"{field}: {e}") from None
    out = np.asarray(out, dtype=np.int32)
    if out.size != n:
        raise NcfError(f"{field}: decoded {out.size} symbols, expected {n}")
    return out


@dataclass
class GroupData:
    n_frames: int
    weights: list[np.ndarray]      # integer weights (group 0) or integer deltas (later), per tensor
    emb_codes: np.ndarray          # (c_emb,) step codes
    emb: np.ndarray                # (n, c_emb, eh, ew) int32


def pack_embeddings(codes: np.ndarray, emb: np.ndarray) -> bytes:
    """A group's embedding step codes, mode and stream: coded directly (mode 0) or as
    differences to the previous frame's (mode 1), whichever is shorter."""
    direct = b"\x00" + encode_ints(emb)
    e = emb.astype(np.int64)
    diff = np.concatenate([e[:1], e[1:] - e[:-1]]) if len(e) > 1 else e
    temporal = b"\x01" + encode_ints(diff.astype(np.int32)) if np.abs(diff).max(initial=0) < 2 ** 30 else None
    best = direct if temporal is None or len(direct) <= len(temporal) else temporal
    return bytes(np.asarray(codes, dtype=np.uint8)) + best


def pack_weights(n_frames: int, weights: list[np.ndarray]) -> bytes:
    """A group payload up to its embeddings: frame count, then every decoder tensor."""
    return encode_uvarint(n_frames) + b"".join(encode_ints(q) for q in weights)


def pack_group(g: GroupData) -> bytes:
    return pack_weights(g.n_frames, g.weights) + pack_embeddings(g.emb_codes, g.emb)


def unpack_group(data: bytes, arch, specs, expect_frames: int, gi: int) -> GroupData:
    r = FieldReader(data, f"section 'g{gi}'")
    n = r.uvarint("frame count", expect_frames, expect_frames)
    weights = [decode_ints(r, math.prod(shape), f"g{gi} {name}").reshape(shape) for name, shape, _ in specs]
    c = arch.cfg
    emb_codes = np.frombuffer(r.raw(c.c_emb, "embedding step codes"), dtype=np.uint8).copy()
    mode = r.uvarint("embedding mode", 0, 1)
    emb = decode_ints(r, n * c.c_emb * c.emb_h * c.emb_w, f"g{gi} embeddings").reshape(n, c.c_emb, c.emb_h, c.emb_w)
    if mode == 1:
        emb = np.cumsum(emb.astype(np.int64), axis=0)
        if np.abs(emb).max(initial=0) > 2 ** 30:
            raise NcfError(f"g{gi}: embedding values overflow")
        emb = emb.astype(np.int32)
    r.done()
    return GroupData(n, weights, emb_codes, emb)


def dequantize(q: np.ndarray, codes: np.ndarray, sshape) -> torch.Tensor:
    step = step_from_code(torch.from_numpy(np.asarray(codes, dtype=np.int64))).reshape(sshape)
    q = np.ascontiguousarray(q, dtype=np.int32)
    return (torch.from_numpy(q).to(torch.float32) * step).contiguous()


def split_codes(wcodes: np.ndarray, specs) -> list[np.ndarray]:
    out, pos = [], 0
    for _, _, sshape in specs:
        k = math.prod(sshape)
        out.append(wcodes[pos:pos + k])
        pos += k
    return out


def n_step_codes(specs) -> int:
    return sum(math.prod(s) for _, _, s in specs)
