"""Video pipeline: frames <-> fitted INR (HNeRV-style) <-> entropy streams <-> .ncf container.

Encoding a clip means *fitting* a small decoder network and per-frame embeddings to it
(``models.inr``); the file holds the quantized, entropy-coded network and embeddings.
NIRVANA-style groups: the clip is cut into groups of ``group`` frames; group 0's network
is trained from scratch, every later group starts from the previous group's *decoded*
weights and is coded as the integer difference of its quantized weights. Memory is
bounded by one group's frames; groups are the unit of resume and of random access
(decoding group g only needs the integer deltas of groups 0..g, and one network run).

File layout (docs/video.md has the byte-level description):
  header: media=video, model="hnerv", weights_hash = sha256(arch section)[:8],
          width/height (crop), pad_width/pad_height (the network's output size), rgb8,
          quality, coder {family, precision, version}, frames, fps, extra {group, groups}
  "arch":   uvarints: layout version, bits, c_emb, emb_h, emb_w, n_blocks, strides,
            channels, kernels, head_k
  "wsteps": one step code (u8) per output channel of every decoder tensor (fixed for
            the clip; step = models.inr.step_from_code)
  "g0".."gN": per group: frame count, then per decoder tensor the Laplace parameter codes
            and the rANS stream of its integer weights (group 0) or integer weight deltas
            (later groups), then the embeddings' per-channel step codes, parameter codes
            and stream.

Determinism: decoded weights are integers times exact float32 steps; the decoder net
runs in float32 with fixed batch size; the encoder's reconstruction is produced by the
very same decode path.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from codec import entropy
from codec.container import (DEFAULT_LIMITS, Header, Limits, MediaKind, NcfError, Section, get_section,
                             read_container, read_header, write_container)
from codec.container._wire import encode_uvarint as _uv
from codec.container._wire import Cursor, zigzag_decode, zigzag_encode
from codec.errors import NeurocodecError
from models.inr import (EmbeddingEncoder, HNeRVConfig, HNeRVDecoder, channel_steps, code_from_step,
                        count_params, default_channels, default_kernels, fake_quant, step_from_code,
                        step_shape)

MODEL_NAME = "hnerv"
COLOR = "rgb8"
CODER_VERSION = 1
ARCH_VERSION = 1
FAMILY = "laplace"
FAMILY_ID = 2  # coder["family"]: 1 gaussian, 2 laplace
DEFAULT_QUALITY = 4.0
DEFAULT_GROUP = 30
DEFAULT_BITS = 6
EMB_BITS = 6
DECODE_BATCH = 4
MAX_PARAMS = 50_000_000            # decoder parameters a file may declare
MAX_OUTPUT_BYTES = 16 * 2 ** 30    # decode_video refuses to allocate more than this
VIDEO_SUFFIXES = {".y4m", ".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".gif"}


# =============================================================== bitrate <-> quality


def quality_to_bpp(quality: float) -> float:
    """Quality 1..8 (continuous) -> target bits per pixel: 0.1 * 2^((q - 4) * 0.6)."""
    return 0.1 * 2.0 ** ((quality - 4.0) * 0.6)


def bpp_to_quality(bpp: float) -> float:
    return 4.0 + math.log2(bpp / 0.1) / 0.6


# =============================================================== frame I/O


def _parse_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, str):
        try:
            w, h = size.lower().split("x")
            size = (int(w), int(h))
        except ValueError:
            raise NeurocodecError(f"size must be WxH, e.g. 320x180, got {size!r}") from None
    w, h = (int(v) for v in size)
    if not (1 <= w <= 16384 and 1 <= h <= 16384):
        raise NeurocodecError(f"size {w}x{h} outside 1..16384")
    return w, h


def is_video(path) -> bool:
    """True when PyAV opens ``path`` as a video (not a still image, not a PNG directory)."""
    import av

    p = Path(path)
    if not p.is_file():
        return False
    try:
        with av.open(str(p)) as f:
            if not f.streams.video:
                return False
            name = f.format.name or ""
            if name.endswith("_pipe") or name.startswith("image2"):
                return False
            if name == "gif":
                s = f.streams.video[0]
                return (s.frames or 0) > 1
            return True
    except Exception:
        return False


def _png_files(path: Path) -> list[Path]:
    return sorted(q for q in path.iterdir() if q.suffix.lower() == ".png")


def iter_frames(path, frames: int | None = None, size=None):
    """Yield HxWx3 uint8 RGB frames of a video file (or a directory of PNGs), resized to ``size``."""
    import av

    wh = _parse_size(size)
    p = Path(path)
    if frames is not None and frames < 1:
        raise NeurocodecError(f"frames must be >= 1, got {frames}")
    if p.is_dir():
        from PIL import Image

        files = _png_files(p)
        if not files:
            raise NeurocodecError(f"no .png frames in directory {path}")
        for i, q in enumerate(files):
            if frames is not None and i >= frames:
                return
            with Image.open(q) as im:
                im = im.convert("RGB")
                if wh and im.size != wh:
                    im = im.resize(wh, Image.BICUBIC)
                yield np.asarray(im, dtype=np.uint8).copy()
        return
    if not p.is_file():
        raise NeurocodecError(f"input not found: {path}")
    try:
        container = av.open(str(p))
    except Exception as e:
        raise NeurocodecError(f"cannot open video {path}: {e}".splitlines()[0]) from None
    with container:
        if not container.streams.video:
            raise NeurocodecError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                if frames is not None and n >= frames:
                    return
                if wh and (frame.width, frame.height) != wh:
                    arr = frame.to_ndarray(width=wh[0], height=wh[1], format="rgb24", interpolation="AREA")
                else:
                    arr = frame.to_ndarray(format="rgb24")
                n += 1
                yield np.ascontiguousarray(arr)
        except av.error.FFmpegError as e:
            raise NeurocodecError(f"cannot decode video {path}: {e}".splitlines()[0]) from None
        if n == 0:
            raise NeurocodecError(f"{path} contains no decodable frames")


def video_fps(path) -> Fraction:
    """Frame rate of a video file (30 for PNG directories or when unknown)."""
    import av

    p = Path(path)
    if p.is_dir():
        return Fraction(30)
    try:
        with av.open(str(p)) as f:
            s = f.streams.video[0]
            r = s.average_rate or s.guessed_rate
            if r and r > 0:
                return Fraction(r.numerator, r.denominator).limit_denominator(1_000_000)
    except Exception:
        pass
    return Fraction(30)


def read_frames(path, frames: int | None = None, size=None) -> tuple[np.ndarray, Fraction]:
    """All (or the first ``frames``) frames as a (T, H, W, 3) uint8 array, and the frame rate."""
    arr = np.stack(list(iter_frames(path, frames, size)))
    return arr, video_fps(path)


def _as_fraction(fps) -> Fraction:
    if isinstance(fps, Fraction):
        r = fps
    else:
        r = Fraction(fps).limit_denominator(1001 * 1000)
    if r <= 0:
        raise NeurocodecError(f"frame rate must be positive, got {fps}")
    return r


def _write_y4m(frames: np.ndarray, f, fps: Fraction) -> None:
    """YUV4MPEG2, 4:4:4, full-range BT.601 (8-bit YCbCr: RGB round-trips within +-1)."""
    t, h, w, _ = frames.shape
    f.write(f"YUV4MPEG2 W{w} H{h} F{fps.numerator}:{fps.denominator} Ip A1:1 C444 XCOLORRANGE=FULL\n".encode())
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    off = np.array([0.0, 128.0, 128.0])
    for fr in frames:
        yuv = fr.reshape(-1, 3).astype(np.float64) @ m.T + off
        yuv = np.clip(np.floor(yuv + 0.5), 0, 255).astype(np.uint8).reshape(h, w, 3)
        f.write(b"FRAME\n")
        f.write(np.ascontiguousarray(yuv.transpose(2, 0, 1)).tobytes())


def write_frames(frames: np.ndarray, path, fps=30) -> None:
    """Write (T, H, W, 3) uint8 frames by extension: .y4m, .mkv (FFV1, lossless RGB),
    .mp4 (x264 CRF 18, for viewing), or a directory (frame_00000.png ...; lossless)."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise NeurocodecError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    fps = _as_fraction(fps)
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".y4m":
        with open(p, "wb") as f:
            _write_y4m(frames, f, fps)
        return
    if ext in (".mkv", ".mp4"):
        t, h, w, _ = frames.shape
        with av.open(str(p), "w") as out:
            if ext == ".mkv":
                s = out.add_stream("ffv1", rate=fps)
                s.pix_fmt = "bgr0"
            else:
                s = out.add_stream("libx264", rate=fps)
                s.pix_fmt = "yuv420p" if (w % 2 == 0 and h % 2 == 0) else "yuv444p"
                s.options = {"crf": "18", "preset": "medium"}
            s.width, s.height = w, h
            for fr in frames:
                vf = av.VideoFrame.from_ndarray(fr, format="rgb24").reformat(format=s.pix_fmt)
                for pkt in s.encode(vf):
                    out.mux(pkt)
            for pkt in s.encode():
                out.mux(pkt)
        return
    if ext == "" or p.is_dir():
        from PIL import Image

        p.mkdir(parents=True, exist_ok=True)
        for i, fr in enumerate(frames):
            Image.fromarray(fr).save(p / f"frame_{i:05d}.png")
        return
    raise NeurocodecError(f"unsupported output {path}: use .y4m, .mkv, .mp4 or a directory")


# =============================================================== byte helpers


def _sv(v: int) -> bytes:
    return _uv(zigzag_encode(v))


class _Reader:
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

    def uv(self, field: str, lo: int = 0, hi: int = 2 ** 63) -> int:
        v = self._checked(lambda: self.cur.uvarint(field))
        if not lo <= v <= hi:
            raise NcfError(f"{self.what}: {field} = {v} outside {lo}..{hi}")
        return v

    def sv(self, field: str) -> int:
        return zigzag_decode(self.uv(field))

    def raw(self, n: int, field: str) -> bytes:
        return bytes(self._checked(lambda: self.cur.take(n, field)))

    def lp(self, field: str) -> bytes:
        return self.raw(self.uv(field + " length"), field)

    def done(self) -> None:
        if self.cur.remaining:
            raise NcfError(f"{self.what}: {self.cur.remaining} unparsed bytes")


# =============================================================== architecture


@dataclass
class Arch:
    cfg: HNeRVConfig
    bits: int

    def to_bytes(self) -> bytes:
        c = self.cfg
        out = [ARCH_VERSION, self.bits, c.c_emb, c.emb_h, c.emb_w, len(c.strides)]
        out += list(c.strides) + list(c.channels) + list(c.kernels) + [c.head_k]
        return b"".join(_uv(v) for v in out)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Arch":
        r = _Reader(data, "section 'arch'")
        r.uv("layout version", ARCH_VERSION, ARCH_VERSION)
        bits = r.uv("bits", 2, 16)
        c_emb = r.uv("c_emb", 1, 1024)
        eh, ew = r.uv("emb_h", 1, 4096), r.uv("emb_w", 1, 4096)
        n = r.uv("blocks", 1, 8)
        strides = [r.uv("stride", 1, 8) for _ in range(n)]
        channels = [r.uv("channels", 1, 1024) for _ in range(n)]
        kernels = [r.uv("kernel", 1, 9) for _ in range(n)]
        head_k = r.uv("head kernel", 1, 9)
        r.done()
        cfg = HNeRVConfig(c_emb, eh, ew, strides, channels, kernels, head_k)
        try:
            cfg.validate()
        except ValueError as e:
            raise NcfError(f"section 'arch': {e}") from None
        if count_params(cfg) > MAX_PARAMS:
            raise NcfError(f"section 'arch': {count_params(cfg)} parameters above the limit {MAX_PARAMS}")
        return cls(cfg, bits)

    def hash8(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()[:8]


def _tensor_specs(cfg: HNeRVConfig) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(name, shape, step shape) of every decoder tensor, in file order."""
    with torch.device("meta"):
        net = HNeRVDecoder(cfg)
    out = []
    for name, p in net.state_dict().items():
        out.append((name, tuple(p.shape), step_shape(p, per_channel=True)))
    return out


_STRIDE_SETS = None


def _stride_candidates() -> list[list[int]]:
    global _STRIDE_SETS
    if _STRIDE_SETS is None:
        import itertools

        seqs = []
        for n in range(2, 7):
            for combo in itertools.combinations_with_replacement([5, 4, 3, 2], n):
                seqs.append(sorted(combo, reverse=True))
        _STRIDE_SETS = seqs
    return _STRIDE_SETS


def choose_strides(width: int, height: int, min_pos: int = 6, max_pos: int = 60) -> tuple[list[int], int, int]:
    """Upsampling strides whose product S pads the frame least, with the embedding map
    (ceil(H/S) x ceil(W/S)) holding min_pos..max_pos positions. Returns (strides, pad_w, pad_h)."""
    best = None
    for seq in _stride_candidates():
        s = math.prod(seq)
        eh, ew = -(-height // s), -(-width // s)
        pos = eh * ew
        over = (eh * ew * s * s) / (width * height) - 1.0
        penalty = 0.0 if min_pos <= pos <= max_pos else 10.0 + abs(math.log(pos / (min_pos if pos < min_pos else max_pos)))
        score = over + penalty + 0.01 * abs(len(seq) - 4)
        if best is None or score < best[0]:
            best = (score, seq, ew * s, eh * s)
    _, seq, pw, ph = best
    return list(seq), pw, ph


# bits per coded value, used only to size the model for a target rate
BITS_PER_WEIGHT = 6.0
BITS_PER_DELTA = 3.5
BITS_PER_EMB = 2.0
EMB_SHARE = 0.2
K_MAX = 3         # kernel of the last block (first is 1)
REDUCE = 1.5      # channel shrink per block
LOWER = 8         # narrowest block
LATER_LR = 0.3    # learning-rate factor of warm-started groups (smaller deltas)
GRAD_CLIP = 0.5   # gradient-norm clipping (0: off)
WARMUP = 100      # warm-up steps of group 0


def plan_arch(width: int, height: int, frames: int, bpp: float, group: int, bits: int = DEFAULT_BITS) -> Arch:
    """Size the network for a target bpp: embeddings take about EMB_SHARE of the bits,
    the decoder (group 0 plus the deltas of later groups) the rest."""
    strides, pw, ph = choose_strides(width, height)
    s = math.prod(strides)
    eh, ew = ph // s, pw // s
    total = bpp * width * height * frames
    c_emb = int(min(max(round(EMB_SHARE * total / (frames * eh * ew * BITS_PER_EMB)), 2), 32))
    emb_bits = c_emb * eh * ew * frames * BITS_PER_EMB
    groups = -(-frames // group)
    per_param = BITS_PER_WEIGHT + (groups - 1) * BITS_PER_DELTA
    target = max((total - emb_bits) / per_param, 500)
    n = len(strides)
    kernels = default_kernels(n, 1, K_MAX)
    lo, hi = 4, 1024
    while lo < hi:
        mid = (lo + hi + 1) // 2
        cfg = HNeRVConfig(c_emb, eh, ew, strides, default_channels(n, mid, REDUCE, LOWER), kernels, 1)
        if count_params(cfg) <= target:
            lo = mid
        else:
            hi = mid - 1
    cfg = HNeRVConfig(c_emb, eh, ew, strides, default_channels(n, lo, REDUCE, LOWER), kernels, 1)
    cfg.validate()
    return Arch(cfg, bits)


# =============================================================== entropy coding of integer tensors


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


def _encode_ints(q: np.ndarray) -> bytes:
    """Integer tensor -> family byte, svarint parameter codes, bytes[n] rANS stream.

    One parametric density per tensor (Laplace, Gaussian or generalized Gaussian, whichever
    codes it shortest), its parameters stored as the coder's own integer codes.
    """
    q = np.ascontiguousarray(q, dtype=np.int32).ravel()
    best = None
    for family, params in _candidates(q):
        codes = entropy.quantize_params(family, **{k: np.array([v]) for k, v in params.items()})
        scal = {k: int(np.asarray(v).ravel()[0]) for k, v in codes.items()}
        full = {k: np.full(q.shape, scal[k], dtype=np.asarray(codes[k]).dtype) for k in codes}
        stream = entropy.encode(family, q, full)
        blob = (bytes([_FAMILIES.index(family)]) + b"".join(_sv(scal[k]) for k in sorted(scal))
                + _uv(len(stream)) + stream)
        if best is None or len(blob) < len(best):
            best = blob
    return best


def _decode_ints(r: _Reader, n: int, field: str) -> np.ndarray:
    fam_id = r.uv(f"{field} family", 0, len(_FAMILIES) - 1)
    family = _FAMILIES[fam_id]
    tmpl = _param_template(family)
    vals = {k: r.sv(f"{field} {k} code") for k in sorted(tmpl)}
    stream = r.lp(f"{field} stream")
    full = {}
    for k, v in vals.items():
        dt = np.asarray(tmpl[k]).dtype
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


# =============================================================== group payloads


@dataclass
class GroupData:
    n_frames: int
    weights: list[np.ndarray]      # integer weights (group 0) or integer deltas (later), per tensor
    emb_codes: np.ndarray          # (c_emb,) step codes
    emb: np.ndarray                # (n, c_emb, eh, ew) int32


def _pack_group(g: GroupData) -> bytes:
    parts = [_uv(g.n_frames)]
    for q in g.weights:
        parts.append(_encode_ints(q))
    parts.append(bytes(np.asarray(g.emb_codes, dtype=np.uint8)))
    # embeddings: coded directly (mode 0) or as differences to the previous frame's (mode 1),
    # whichever is shorter
    direct = b"\x00" + _encode_ints(g.emb)
    e = g.emb.astype(np.int64)
    diff = np.concatenate([e[:1], e[1:] - e[:-1]]) if len(e) > 1 else e
    temporal = b"\x01" + _encode_ints(diff.astype(np.int32)) if np.abs(diff).max(initial=0) < 2 ** 30 else None
    parts.append(direct if temporal is None or len(direct) <= len(temporal) else temporal)
    return b"".join(parts)


def _unpack_group(data: bytes, arch: Arch, specs, expect_frames: int, gi: int) -> GroupData:
    r = _Reader(data, f"section 'g{gi}'")
    n = r.uv("frame count", expect_frames, expect_frames)
    weights = [_decode_ints(r, math.prod(shape), f"g{gi} {name}").reshape(shape) for name, shape, _ in specs]
    c = arch.cfg
    emb_codes = np.frombuffer(r.raw(c.c_emb, "embedding step codes"), dtype=np.uint8).copy()
    mode = r.uv("embedding mode", 0, 1)
    emb = _decode_ints(r, n * c.c_emb * c.emb_h * c.emb_w, f"g{gi} embeddings").reshape(n, c.c_emb, c.emb_h, c.emb_w)
    if mode == 1:
        emb = np.cumsum(emb.astype(np.int64), axis=0)
        if np.abs(emb).max(initial=0) > 2 ** 30:
            raise NcfError(f"g{gi}: embedding values overflow")
        emb = emb.astype(np.int32)
    r.done()
    return GroupData(n, weights, emb_codes, emb)


def _dequant(q: np.ndarray, codes: np.ndarray, sshape) -> torch.Tensor:
    step = step_from_code(torch.from_numpy(np.asarray(codes, dtype=np.int64))).reshape(sshape)
    q = np.ascontiguousarray(q, dtype=np.int32)
    return (torch.from_numpy(q).to(torch.float32) * step).contiguous()


def _split_codes(wcodes: np.ndarray, specs) -> list[np.ndarray]:
    out, pos = [], 0
    for _, _, sshape in specs:
        k = math.prod(sshape)
        out.append(wcodes[pos:pos + k])
        pos += k
    return out


def _n_step_codes(specs) -> int:
    return sum(math.prod(s) for _, _, s in specs)


@torch.inference_mode()
def _render(net: HNeRVDecoder, emb: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Decoder network -> uint8 frames, in fixed batches (the one path encoder and decoder share).

    Runs on one torch thread: oneDNN's convolutions split their reductions differently
    with more threads, which changes float32 rounding (measured on 176x144 frames), so the
    thread count is pinned here and restored afterwards.
    """
    out = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(0, emb.shape[0], DECODE_BATCH):
            # contiguous NCHW always: a channels-last input (what the encoder's convs emit)
            # makes oneDNN pick other kernels, with other float32 rounding
            x = emb[i:i + DECODE_BATCH].to(torch.float32).contiguous(memory_format=torch.contiguous_format)
            y = net(x)[:, :, :height, :width]
            y = torch.round(y.clamp(0, 1) * 255.0).to(torch.uint8)
            out.append(y.permute(0, 2, 3, 1).contiguous().numpy())
    finally:
        torch.set_num_threads(threads)
    return np.concatenate(out)


def _load_weights(net: HNeRVDecoder, specs, tensors: list[torch.Tensor]) -> None:
    sd = {name: t.reshape(shape) for (name, shape, _), t in zip(specs, tensors)}
    net.load_state_dict(sd, strict=True)


# =============================================================== decoding


@dataclass
class _Parsed:
    header: Header
    arch: Arch
    specs: list
    wcodes: list[np.ndarray]
    groups: list[bytes]
    group: int


def _parse(data: bytes, limits: Limits = DEFAULT_LIMITS) -> _Parsed:
    header, sections = read_container(data, limits)
    if header.media != MediaKind.VIDEO:
        raise NeurocodecError("not a video .ncf file (media kind is image)")
    if header.model != MODEL_NAME:
        raise NeurocodecError(f"video model {header.model!r} is not supported (only {MODEL_NAME!r})")
    if header.color != COLOR:
        raise NcfError(f"unsupported colour format {header.color!r}")
    if header.coder.get("version") != CODER_VERSION or header.coder.get("family") != FAMILY_ID:
        raise NcfError(f"unsupported coder settings {header.coder}")
    if header.coder.get("precision") != getattr(entropy, "PRECISION", header.coder.get("precision")):
        raise NcfError(f"coder precision {header.coder.get('precision')} differs from this build's")
    arch = Arch.from_bytes(get_section(sections, "arch"))
    if arch.hash8() != header.weights_hash:
        raise NcfError("weights_hash does not match the architecture section")
    c = arch.cfg
    if c.out_w != header.pad_width or c.out_h != header.pad_height:
        raise NcfError(f"architecture output {c.out_w}x{c.out_h} differs from the padded size "
                       f"{header.pad_width}x{header.pad_height}")
    group = header.extra.get("group", 0)
    if not 1 <= group <= 100_000:
        raise NcfError(f"group size {group} outside 1..100000")
    n_groups = -(-header.frames // group)
    if header.extra.get("groups") != n_groups:
        raise NcfError(f"header declares {header.extra.get('groups')} groups, frames/group give {n_groups}")
    specs = _tensor_specs(c)
    raw = get_section(sections, "wsteps")
    if len(raw) != _n_step_codes(specs):
        raise NcfError(f"section 'wsteps': {len(raw)} bytes, expected {_n_step_codes(specs)}")
    wcodes = _split_codes(np.frombuffer(raw, dtype=np.uint8).astype(np.int64), specs)
    groups = [get_section(sections, f"g{i}") for i in range(n_groups)]
    known = {"arch", "wsteps"} | {f"g{i}" for i in range(n_groups)}
    extra = [s.name for s in sections if s.name not in known]
    if extra:
        raise NcfError(f"unexpected sections {extra}")
    return _Parsed(header, arch, specs, wcodes, groups, group)


def _group_frames(p: _Parsed, gi: int) -> int:
    return min(p.group, p.header.frames - gi * p.group)


def iter_decode_video(data: bytes, groups=None, limits: Limits = DEFAULT_LIMITS):
    """Yield ``(group_index, frames uint8 (n, H, W, 3))`` group by group (bounded memory).

    ``groups``: an iterable of group indices to render (random access); weights of the
    skipped groups are still summed (integer deltas, cheap), their frames not rendered.
    """
    p = _parse(data, limits)
    want = None if groups is None else set(int(g) for g in groups)
    c = p.arch.cfg
    ints = None
    last = len(p.groups) - 1 if want is None else max(want, default=-1)
    for gi in range(last + 1):
        g = _unpack_group(p.groups[gi], p.arch, p.specs, _group_frames(p, gi), gi)
        if ints is None:
            ints = [w.astype(np.int64) for w in g.weights]
        else:
            ints = [a + d for a, d in zip(ints, g.weights)]
            if any(np.abs(a).max(initial=0) > 2 ** 30 for a in ints):
                raise NcfError(f"g{gi}: accumulated weights overflow")
        if want is not None and gi not in want:
            continue
        net = HNeRVDecoder(c).eval()  # a fresh module per group: the encoder renders the same way
        _load_weights(net, p.specs, [_dequant(q, codes, s) for q, codes, (_, _, s) in zip(ints, p.wcodes, p.specs)])
        emb = _dequant(g.emb, g.emb_codes, (1, c.c_emb, 1, 1))
        yield gi, _render(net, emb, p.header.height, p.header.width)


def decode_video(data: bytes, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """.ncf bytes -> (T, H, W, 3) uint8 RGB frames, bit-exactly the encoder's reconstruction."""
    header, _ = read_container(data, limits)
    need = header.frames * header.width * header.height * 3
    if need > MAX_OUTPUT_BYTES:
        raise NeurocodecError(f"decoded video would take {need} bytes (limit {MAX_OUTPUT_BYTES}); "
                              "decode it group by group with iter_decode_video")
    out = np.empty((header.frames, header.height, header.width, 3), dtype=np.uint8)
    pos = 0
    for _, fr in iter_decode_video(data, limits=limits):
        out[pos:pos + len(fr)] = fr
        pos += len(fr)
    return out


def video_fps_of(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Fraction:
    h = read_header(data, limits)
    return Fraction(h.fps_num, h.fps_den) if h.fps_num else Fraction(30)


def video_info(data: bytes) -> dict:
    """Video-specific fields for ``neurocodec info`` (architecture, groups, per-group bytes)."""
    p = _parse(data)
    c = p.arch.cfg
    return {
        "fps": f"{p.header.fps_num}/{p.header.fps_den}",
        "group_frames": p.group,
        "groups": len(p.groups),
        "group_bytes": [len(g) for g in p.groups],
        "arch": {"c_emb": c.c_emb, "emb": [c.emb_h, c.emb_w], "strides": c.strides, "channels": c.channels,
                 "kernels": c.kernels, "params": count_params(c), "bits": p.arch.bits},
    }


# =============================================================== encoding


@dataclass
class EncodeSettings:
    bpp: float
    quality: float
    epochs: int
    group: int
    bits: int
    seed: int
    lr: float
    batch: int


def _pad(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if (h, w) == (ph, pw):
        return x
    return F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class _Resume:
    """resume_dir layout: meta.json (the arguments), wsteps.bin, group_NNNNN.bin (finished
    group payloads), state.safetensors (decoder/encoder after the last finished group),
    ckpt.safetensors + ckpt.json (the group in progress, saved every epoch)."""

    def __init__(self, root, fingerprint: dict):
        self.root = Path(root) if root else None
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        meta = self.root / "meta.json"
        if meta.exists():
            old = json.loads(meta.read_text())
            if old != fingerprint:
                raise NeurocodecError(f"resume directory {self.root} holds state for other arguments "
                                      f"({old}); use another directory")
        else:
            _atomic_write(meta, json.dumps(fingerprint, sort_keys=True).encode())

    def group_payload(self, gi: int) -> bytes | None:
        if self.root is None:
            return None
        f = self.root / f"group_{gi:05d}.bin"
        return f.read_bytes() if f.exists() else None

    def save_group(self, gi: int, payload: bytes, tensors: dict) -> None:
        if self.root is None:
            return
        from safetensors.torch import save_file

        _atomic_write(self.root / f"group_{gi:05d}.bin", payload)
        tmp = self.root / "state.safetensors.part"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, self.root / "state.safetensors")
        (self.root / "ckpt.json").unlink(missing_ok=True)

    def load_state(self) -> dict | None:
        if self.root is None or not (self.root / "state.safetensors").exists():
            return None
        from safetensors.torch import load_file

        return load_file(str(self.root / "state.safetensors"))

    def save_ckpt(self, meta: dict, tensors: dict) -> None:
        if self.root is None:
            return
        from safetensors.torch import save_file

        tmp = self.root / "ckpt.safetensors.part"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, self.root / "ckpt.safetensors")
        _atomic_write(self.root / "ckpt.json", json.dumps(meta).encode())

    def load_ckpt(self, gi: int):
        if self.root is None or not (self.root / "ckpt.json").exists():
            return None
        from safetensors.torch import load_file

        meta = json.loads((self.root / "ckpt.json").read_text())
        if meta.get("group") != gi:
            return None
        return meta, load_file(str(self.root / "ckpt.safetensors"))


def _opt_tensors(opt: torch.optim.Optimizer) -> dict:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def _load_opt(opt: torch.optim.Optimizer, tensors: dict) -> None:
    sd = opt.state_dict()
    state = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def _count_frames(source, frames, size) -> tuple[int, int, int]:
    n, w, h = 0, 0, 0
    for fr in iter_frames(source, frames, size):
        if n == 0:
            h, w = fr.shape[:2]
        n += 1
    return n, w, h


def _groups_of(source, frames, size, group):
    buf = []
    for fr in iter_frames(source, frames, size):
        buf.append(fr)
        if len(buf) == group:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


def encode_video(source, *, threads: int | None = None, **kwargs) -> bytes:
    """Fit the INR to ``source`` and return .ncf bytes; see :func:`_encode_video` for the
    arguments. ``threads``: torch threads for the fit (restored afterwards); on a loaded
    2-core machine 1 thread was 15x faster than 2 (oversubscription)."""
    if threads is None:
        return _encode_video(source, **kwargs)
    if threads < 1:
        raise NeurocodecError("threads must be >= 1")
    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        return _encode_video(source, **kwargs)
    finally:
        torch.set_num_threads(old)


class _CallbackBar:
    """The part of tqdm's interface the encoder uses, reporting to ``callback(done, total)``."""

    def __init__(self, total: int, callback):
        self.total, self.done, self.callback = total, 0, callback

    def update(self, n: int = 1) -> None:
        self.done += n
        self.callback(self.done, self.total)

    def set_postfix(self, **_) -> None:
        pass

    def close(self) -> None:
        pass


def _encode_video(source, *, bpp: float | None = None, quality: float | None = None, frames: int | None = None,
                 size=None, epochs: int | None = None, resume_dir=None, progress=True,
                 group: int | None = None, bits: int = DEFAULT_BITS, seed: int = 0, model: str | None = None,
                 lr: float = 1e-2, batch: int = 2,
                 _recon: list | None = None) -> bytes:
    """Fit the INR to ``source`` (any video PyAV reads, or a directory of PNGs) and return .ncf bytes.

    ``bpp`` (target bits per pixel) or ``quality`` (1..8, default 4) sets the model size;
    ``frames`` keeps the first N frames, ``size`` ("WxH" or (w, h)) resizes, ``epochs``
    sets the training epochs of group 0 (later groups train half as many, warm-started),
    ``group`` the frames per group (default 30), ``bits`` the weight bit depth (6..8).
    ``resume_dir`` keeps finished groups and a per-epoch checkpoint there; rerunning with
    the same arguments continues where it stopped. ``progress``: True for a bar on stderr,
    False for none, or a callable ``progress(done_epochs, total_epochs)`` (e.g. a web UI's bar).
    """
    if model not in (None, "default", MODEL_NAME):
        raise NeurocodecError(f"unknown video model {model!r}; the video codec is {MODEL_NAME!r}")
    if bpp is not None and quality is not None:
        raise NeurocodecError("give either bpp or quality, not both")
    if quality is None and bpp is None:
        quality = DEFAULT_QUALITY
    if quality is not None:
        if not 1.0 <= float(quality) <= 8.0:
            raise NeurocodecError(f"quality must be in [1, 8], got {quality}")
        bpp = quality_to_bpp(float(quality))
    bpp = float(bpp)
    if not 0.001 <= bpp <= 8.0:
        raise NeurocodecError(f"bpp must be in [0.001, 8], got {bpp}")
    quality = bpp_to_quality(bpp) if quality is None else float(quality)
    if not 2 <= bits <= 12:
        raise NeurocodecError(f"bits must be in 2..12, got {bits}")
    group = int(group or DEFAULT_GROUP)
    if group < 1:
        raise NeurocodecError("group must be >= 1")
    wh = _parse_size(size)
    n_frames, width, height = _count_frames(source, frames, wh)
    fps = video_fps(source)
    if epochs is None:
        epochs = 100
    epochs = int(epochs)
    if epochs < 1:
        raise NeurocodecError("epochs must be >= 1")
    st = EncodeSettings(bpp, quality, epochs, group, bits, seed, lr=float(lr), batch=int(batch))
    arch = plan_arch(width, height, n_frames, bpp, group, bits)
    cfg = arch.cfg
    specs = _tensor_specs(cfg)
    n_groups = -(-n_frames // group)
    if n_groups > 4000:
        raise NeurocodecError(f"{n_groups} groups exceed the 4000 a file can hold; use a larger group")

    fingerprint = {"source": str(Path(source).resolve()), "frames": n_frames, "size": [width, height],
                   "bpp": bpp, "epochs": epochs, "group": group, "bits": bits, "seed": seed,
                   "arch": arch.to_bytes().hex(), "version": CODER_VERSION, "lr": float(lr), "batch": int(batch)}
    res = _Resume(resume_dir, fingerprint)

    torch.manual_seed(seed)
    dec = HNeRVDecoder(cfg)
    enc = EmbeddingEncoder(cfg.strides, cfg.c_emb)
    state = res.load_state()
    wcodes_flat = None
    prev_ints = None
    if state is not None:
        dec.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("dec.")})
        enc.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("enc.")})
        wcodes_flat = state["wcodes"].numpy().astype(np.int64)
        prev_ints = [state[f"ints.{i}"].numpy().astype(np.int64) for i in range(len(specs))]
        groups_done = int(state["done"])
    else:
        groups_done = 0

    g_epochs = [epochs if gi == 0 else max(1, epochs // 2) for gi in range(n_groups)]
    bar = None
    if callable(progress):
        bar = _CallbackBar(sum(g_epochs), progress)
    elif progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(g_epochs), unit="epoch", desc="encode", dynamic_ncols=True)
    payloads = []
    try:
        for gi, clip in enumerate(_groups_of(source, frames, wh, group)):
            done = res.group_payload(gi) if gi < groups_done else None
            if done is not None:
                payloads.append(done)
                if bar:
                    bar.update(g_epochs[gi])
                continue
            x = torch.from_numpy(clip).permute(0, 3, 1, 2).to(torch.float32) / 255.0
            xp = _pad(x, cfg.out_h, cfg.out_w)
            wcodes_flat, ints, gd = _fit_group(gi, xp, height, width, dec, enc, specs, arch, st, g_epochs[gi],
                                               wcodes_flat, prev_ints, res, bar)
            if _recon is not None:
                c = arch.cfg
                fresh = HNeRVDecoder(c).eval()
                fresh.load_state_dict(dec.state_dict())
                _recon.append(_render(fresh, _dequant(gd.emb, gd.emb_codes, (1, c.c_emb, 1, 1)), height, width))
            payload = _pack_group(gd)
            payloads.append(payload)
            prev_ints = ints
            tensors = {f"dec.{k}": v for k, v in dec.state_dict().items()}
            tensors.update({f"enc.{k}": v for k, v in enc.state_dict().items()})
            tensors["wcodes"] = torch.from_numpy(np.asarray(wcodes_flat, dtype=np.int64))
            tensors["done"] = torch.tensor(gi + 1)
            tensors.update({f"ints.{i}": torch.from_numpy(q.astype(np.int64)) for i, q in enumerate(ints)})
            res.save_group(gi, payload, tensors)
    finally:
        if bar:
            bar.close()
    if len(payloads) != n_groups:
        raise NeurocodecError(f"source yielded {len(payloads)} groups, expected {n_groups} (file changed?)")

    header = Header(media=MediaKind.VIDEO, model=MODEL_NAME, weights_hash=arch.hash8(), width=width,
                    height=height, pad_width=cfg.out_w, pad_height=cfg.out_h, color=COLOR, quality=quality,
                    coder={"version": CODER_VERSION, "family": FAMILY_ID,
                           "precision": int(getattr(entropy, "PRECISION", 16))},
                    frames=n_frames, fps_num=fps.numerator, fps_den=fps.denominator,
                    extra={"group": group, "groups": n_groups})
    sections = [Section("arch", arch.to_bytes()),
                Section("wsteps", bytes(np.asarray(wcodes_flat, dtype=np.uint8)))]
    sections += [Section(f"g{i}", p) for i, p in enumerate(payloads)]
    return write_container(header, sections)


def _fit_group(gi, xp, height, width, dec, enc, specs, arch, st, n_epochs, wcodes_flat, prev_ints, res, bar):
    """Train the decoder + encoder on one group (QAT), quantize; returns (wcodes, ints, GroupData)."""
    names = [n for n, _, _ in specs]
    params = dict(dec.named_parameters())
    opt = torch.optim.Adam(list(dec.parameters()) + list(enc.parameters()), lr=st.lr)
    n = xp.shape[0]
    warm = n_epochs // 2 if (gi == 0 and wcodes_flat is None) else 0
    start = 0
    ck = res.load_ckpt(gi)
    if ck is not None:
        meta, tens = ck
        dec.load_state_dict({k[4:]: v for k, v in tens.items() if k.startswith("dec.")})
        enc.load_state_dict({k[4:]: v for k, v in tens.items() if k.startswith("enc.")})
        _load_opt(opt, tens)
        start = meta["epoch"]
        if "wcodes" in tens:
            wcodes_flat = tens["wcodes"].numpy().astype(np.int64)
        if bar:
            bar.update(start)
    total_steps = n_epochs * -(-n // st.batch)
    sched_step = start * -(-n // st.batch)
    steps = None
    levels = 2 ** (arch.bits - 1) - 1
    for ep in range(start, n_epochs):
        if ep >= warm and wcodes_flat is None:
            wcodes_flat = np.concatenate([
                code_from_step(channel_steps(params[nm], arch.bits, per_channel=True)).numpy().ravel()
                for nm in names])
        if wcodes_flat is not None and steps is None:
            steps = {nm: step_from_code(torch.from_numpy(c)).reshape(s)
                     for (nm, _, s), c in zip(specs, _split_codes(wcodes_flat, specs))}
        estep_ep = None
        if steps is not None:  # embedding steps of this epoch: from every frame of the group
            with torch.no_grad():
                e_all = torch.cat([enc(xp[i:i + 8]) for i in range(0, n, 8)])
                estep_ep = step_from_code(code_from_step(channel_steps(e_all.transpose(0, 1), EMB_BITS)))
                estep_ep = estep_ep.reshape(1, -1, 1, 1)
        gen = torch.Generator().manual_seed((st.seed * 1_000_003 + gi) * 100_003 + ep)
        perm = torch.randperm(n, generator=gen)
        tot, cnt = 0.0, 0
        for i in range(0, n, st.batch):
            idx = perm[i:i + st.batch]
            base = st.lr if gi == 0 else st.lr * LATER_LR
            lr = base * 0.5 * (1 + math.cos(math.pi * sched_step / max(total_steps, 1)))
            lr = lr * min(1.0, (sched_step + 1) / max(1, min(WARMUP, total_steps // 20))) if gi == 0 else lr
            for pg in opt.param_groups:
                pg["lr"] = lr
            sched_step += 1
            xb = xp[idx]
            e = enc(xb)
            if steps is not None:
                e = fake_quant(e, estep_ep, 2 ** (EMB_BITS - 1) - 1)
                qp = {nm: fake_quant(params[nm], steps[nm], levels) for nm in names}
                y = torch.func.functional_call(dec, qp, (e,))
            else:
                y = dec(e)
            loss = F.mse_loss(y[:, :, :height, :width], xb[:, :, :height, :width])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if GRAD_CLIP:
                torch.nn.utils.clip_grad_norm_(list(dec.parameters()) + list(enc.parameters()), GRAD_CLIP)
            opt.step()
            tot += float(loss.detach()) * len(idx)
            cnt += len(idx)
        if bar:
            bar.set_postfix(group=f"{gi}", psnr=f"{-10 * math.log10(max(tot / cnt, 1e-10)):.2f}")
            bar.update(1)
        tens = {f"dec.{k}": v for k, v in dec.state_dict().items()}
        tens.update({f"enc.{k}": v for k, v in enc.state_dict().items()})
        tens.update(_opt_tensors(opt))
        if wcodes_flat is not None:
            tens["wcodes"] = torch.from_numpy(np.asarray(wcodes_flat, dtype=np.int64))
        res.save_ckpt({"group": gi, "epoch": ep + 1}, tens)
    if wcodes_flat is None:  # epochs too few to reach QAT
        wcodes_flat = np.concatenate([
            code_from_step(channel_steps(params[nm], arch.bits, per_channel=True)).numpy().ravel() for nm in names])
    # ---- quantize weights on the fixed step grid; snap the network to the decoded weights
    codes = _split_codes(wcodes_flat, specs)
    ints = []
    with torch.no_grad():
        for (nm, shape, s), c in zip(specs, codes):
            step = step_from_code(torch.from_numpy(c)).reshape(s)
            q = torch.round(params[nm].detach() / step).to(torch.int64).numpy()
            q = np.clip(q, -levels, levels)
            ints.append(q)
        _load_weights(dec, specs, [_dequant(q, c, s) for q, c, (_, _, s) in zip(ints, codes, specs)])
        enc.eval()
        e = torch.cat([enc(xp[i:i + 8]) for i in range(0, n, 8)])
        enc.train()
        ecodes = code_from_step(channel_steps(e.transpose(0, 1), EMB_BITS)).numpy().ravel()
        estep = step_from_code(torch.from_numpy(ecodes)).reshape(1, -1, 1, 1)
        eq = torch.round(e / estep).clamp(-(2 ** (EMB_BITS - 1) - 1), 2 ** (EMB_BITS - 1) - 1).to(torch.int64).numpy()
    weights = ints if prev_ints is None else [a - b for a, b in zip(ints, prev_ints)]
    gd = GroupData(n, [w.astype(np.int32) for w in weights], ecodes.astype(np.uint8), eq.astype(np.int32))
    return wcodes_flat, ints, gd
