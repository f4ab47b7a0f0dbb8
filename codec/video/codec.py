"""The INR video codec: encode_video fits a small decoder network and per-frame embeddings to
a clip (HNeRV-style, models.inr); the file holds them quantized and entropy-coded
(codec.video.bitstream; the layout is in its docstring and docs/video.md).

NIRVANA-style groups: the clip is cut into groups of `group` frames; group 0's network is
trained from scratch, every later group starts from the previous group's *decoded* weights
and is coded as the integer difference of its quantized weights (codec.video.fit). Memory
is bounded by one group's frames; groups are the unit of resume (codec.video.resume) and of
random access (decoding group g only needs the integer deltas of groups 0..g, and one
network run).

Determinism: decoded weights are integers times exact float32 steps; the decoder net runs in
float32 with a fixed batch size on one thread; the encoder's reconstruction is produced by the
very same decode path (`render`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from codec import entropy
from codec.container import (DEFAULT_LIMITS, Header, Limits, MediaKind, NcfError, Section, get_section,
                             read_container, read_header, write_container)
from codec.errors import NeurocodecError
from codec.threads import Pool, torch_threads
from codec.video.arch import DEFAULT_BITS, Arch, bpp_to_quality, min_bpp, plan_arch, quality_to_bpp, tensor_specs
from codec.video import rate
from codec.video.bitstream import dequantize, n_step_codes, pack_group, split_codes, unpack_group
from codec.video.fit import (FitSettings, GroupJob, finished_group_tensors, fit_group, load_model_tensors,
                             load_weights)
from codec.video.io import DEFAULT_FPS, as_fraction, iter_frames, video_fps
from codec.video.resume import ResumeStore
from models.inr import EmbeddingEncoder, HNeRVDecoder, count_params

MODEL_NAME = "hnerv"
COLOR = "rgb8"
CODER_VERSION = 1
FAMILY_ID = 2  # coder["family"]: 1 gaussian, 2 laplace
DEFAULT_QUALITY = 4.0
# Frames per group when the caller gives none: the whole clip, up to MAX_GROUP_FRAMES and
# GROUP_PIXELS of frames in memory (30 frames of 1920x1080, what groups of 30 held there), in
# equal groups (default_group).
MAX_GROUP_FRAMES = 150
GROUP_PIXELS = 30 * 1920 * 1080
MIN_DEFAULT_GROUP = 30
EFFORT_EPOCHS = {"fast": 25, "default": 100, "max": 300}  # epochs of a clip of up to 30 frames (effort_epochs)
FULL_EPOCH_FRAMES = 30
MAX_GROUPS = 4000
DECODE_BATCH = 4
MAX_OUTPUT_BYTES = 16 * 2 ** 30    # decode_video refuses to allocate more than this


# =============================================================== decoding


@dataclass
class ParsedVideo:
    header: Header
    arch: Arch
    specs: list
    wcodes: list[np.ndarray]
    groups: list[bytes]
    group: int


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS) -> ParsedVideo:
    """The checked header and sections of a video file; group payloads are parsed lazily."""
    header, sections = read_container(data, limits)
    if header.media != MediaKind.VIDEO:
        raise NeurocodecError("not a video .ncf file (media kind is image)")
    if header.model != MODEL_NAME:
        raise NeurocodecError(f"video model {header.model!r} is not supported (only {MODEL_NAME!r})")
    if header.color != COLOR:
        raise NcfError(f"unsupported colour format {header.color!r}")
    if header.coder.get("version") != CODER_VERSION or header.coder.get("family") != FAMILY_ID:
        raise NcfError(f"unsupported coder settings {header.coder}")
    if header.coder.get("precision") != entropy.PRECISION:
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
    specs = tensor_specs(c)
    raw = get_section(sections, "wsteps")
    if len(raw) != n_step_codes(specs):
        raise NcfError(f"section 'wsteps': {len(raw)} bytes, expected {n_step_codes(specs)}")
    wcodes = split_codes(np.frombuffer(raw, dtype=np.uint8).astype(np.int64), specs)
    groups = [get_section(sections, f"g{i}") for i in range(n_groups)]
    known = {"arch", "wsteps"} | {f"g{i}" for i in range(n_groups)}
    extra = [s.name for s in sections if s.name not in known]
    if extra:
        raise NcfError(f"unexpected sections {extra}")
    return ParsedVideo(header, arch, specs, wcodes, groups, group)


def group_frames(p: ParsedVideo, gi: int) -> int:
    return min(p.group, p.header.frames - gi * p.group)


def iter_decode_video(data: bytes, groups=None, limits: Limits = DEFAULT_LIMITS, threads: int | None = None):
    """Yield ``(group_index, frames uint8 (n, H, W, 3))`` group by group (bounded memory), on
    `threads` threads (None: every core; the same frames on any count).

    ``groups``: an iterable of group indices to render (random access); weights of the
    skipped groups are still summed (integer deltas, cheap), their frames not rendered.
    """
    p = parse(data, limits)
    want = None if groups is None else set(int(g) for g in groups)
    c = p.arch.cfg
    ints = None
    last = len(p.groups) - 1 if want is None else max(want, default=-1)
    for gi in range(last + 1):
        g = unpack_group(p.groups[gi], p.arch, p.specs, group_frames(p, gi), gi)
        if ints is None:
            ints = [w.astype(np.int64) for w in g.weights]
        else:
            ints = [a + d for a, d in zip(ints, g.weights)]
            if any(np.abs(a).max(initial=0) > 2 ** 30 for a in ints):
                raise NcfError(f"g{gi}: accumulated weights overflow")
        if want is not None and gi not in want:
            continue
        net = HNeRVDecoder(c).eval()  # a fresh module per group: the encoder renders the same way
        load_weights(net, p.specs, [dequantize(q, codes, s) for q, codes, (_, _, s) in zip(ints, p.wcodes, p.specs)])
        emb = dequantize(g.emb, g.emb_codes, (1, c.c_emb, 1, 1))
        yield gi, render(net, emb, p.header.height, p.header.width, threads)


def decode_video(data: bytes, limits: Limits = DEFAULT_LIMITS, *, threads: int | None = None) -> np.ndarray:
    """.ncf bytes -> (T, H, W, 3) uint8 RGB frames, bit-exactly the encoder's reconstruction, on
    `threads` threads (None: every core; the same frames on any count)."""
    header, _ = read_container(data, limits)
    need = header.frames * header.width * header.height * 3
    if need > MAX_OUTPUT_BYTES:
        raise NeurocodecError(f"decoded video would take {need} bytes (limit {MAX_OUTPUT_BYTES}); "
                              "decode it group by group with iter_decode_video")
    out = np.empty((header.frames, header.height, header.width, 3), dtype=np.uint8)
    pos = 0
    for _, fr in iter_decode_video(data, limits=limits, threads=threads):
        out[pos:pos + len(fr)] = fr
        pos += len(fr)
    return out


def video_fps_of(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Fraction:
    h = read_header(data, limits)
    return Fraction(h.fps_num, h.fps_den) if h.fps_num else DEFAULT_FPS


def video_info(data: bytes) -> dict:
    """Video-specific fields for ``neurocodec info`` (architecture, groups, per-group bytes)."""
    p = parse(data)
    c = p.arch.cfg
    return {
        "fps": f"{p.header.fps_num}/{p.header.fps_den}",
        "group_frames": p.group,
        "groups": len(p.groups),
        "group_bytes": [len(g) for g in p.groups],
        "arch": {"c_emb": c.c_emb, "emb": [c.emb_h, c.emb_w], "strides": c.strides, "channels": c.channels,
                 "kernels": c.kernels, "params": count_params(c), "bits": p.arch.bits},
    }


def render(net: HNeRVDecoder, emb: torch.Tensor, height: int, width: int, threads: int | None = None) -> np.ndarray:
    """Decoder network -> uint8 frames, in fixed batches of DECODE_BATCH frames, each batch on
    one thread of a pool of `threads` (None: every core) with torch on one thread
    (codec.threads): the same frames on any thread count; the one path encoder and decoder share."""
    def batch(i: int) -> np.ndarray:
        with torch.inference_mode():  # per thread, as torch's grad modes are
            # contiguous NCHW always: a channels-last input (what the encoder's convs emit)
            # makes oneDNN pick other kernels, with other float32 rounding
            x = emb[i:i + DECODE_BATCH].to(torch.float32).contiguous(memory_format=torch.contiguous_format)
            y = net(x)[:, :, :height, :width]
            y = torch.round(y.clamp(0, 1) * 255.0).to(torch.uint8)
            return y.permute(0, 2, 3, 1).contiguous().numpy()

    with torch_threads(1), Pool(threads) as pool:
        return np.concatenate(pool.map(batch, range(0, emb.shape[0], DECODE_BATCH)))


# =============================================================== encoding


def effort_epochs(effort: str, n_frames: int) -> int:
    """Group 0's epochs for an effort level: EFFORT_EPOCHS over the first FULL_EPOCH_FRAMES
    frames and half as many over each later frame, spread over the clip. Why: that is the
    training steps groups of 30 took (100 epochs, then 50 per later group), so an effort
    level keeps its time per frame now that a clip is one group (carphone, 120 frames, 0.1 bpp:
    62 epochs, 31.2 dB, where groups of 30 gave 28.8 dB; docs/video.md)."""
    e = EFFORT_EPOCHS[effort]
    if n_frames <= FULL_EPOCH_FRAMES:
        return e
    return max(1, round(e * (FULL_EPOCH_FRAMES + (n_frames - FULL_EPOCH_FRAMES) / 2) / n_frames))


def default_group(n_frames: int, width: int, height: int) -> int:
    """Frames per group: the whole clip where it fits (MAX_GROUP_FRAMES, GROUP_PIXELS; never
    below MIN_DEFAULT_GROUP frames), else equal groups. Why: every later group pays for its
    weight deltas and trains from the previous group's network; one network fitted to all the
    frames gave carphone (120 frames, 0.1 bpp) 31.6 dB against 28.8 dB in groups of 30
    (docs/video.md, "Frames per group")."""
    cap = min(MAX_GROUP_FRAMES, max(MIN_DEFAULT_GROUP, GROUP_PIXELS // max(1, width * height)))
    n_groups = -(-n_frames // cap)
    return max(1, -(-n_frames // n_groups))


def _pad(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if (h, w) == (ph, pw):
        return x
    return F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")


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


def _source_id(source) -> str:
    """What the resume fingerprint records of the source: its path, or the frames' sha256."""
    if isinstance(source, np.ndarray):
        return "sha256:" + hashlib.sha256(np.ascontiguousarray(source).tobytes()).hexdigest()
    return str(Path(source).resolve())


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


def _progress_bar(progress, total: int):
    if callable(progress):
        return _CallbackBar(total, progress)
    if progress:
        from tqdm import tqdm

        return tqdm(total=total, unit="epoch", desc="encode", dynamic_ncols=True)
    return None


def _target_rate(bpp: float | None, quality: float | None) -> tuple[float, float]:
    """(bpp, quality) from either of them (neither: DEFAULT_QUALITY), checked."""
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
    return bpp, bpp_to_quality(bpp) if quality is None else float(quality)


def encode_video(source, *, bpp: float | None = None, quality: float | None = None, frames: int | None = None,
                 size=None, epochs: int | None = None, effort: str = "default", resume_dir=None, progress=True,
                 group: int | None = None, bits: int = DEFAULT_BITS, seed: int = 0, model: str | None = None,
                 lr: float = 1e-2, batch: int = 1, threads: int | None = None, fps=None,
                 on_group=None) -> bytes:
    """Fit the INR to ``source`` and return .ncf bytes. ``source``: any video PyAV reads, a
    directory of PNGs, or (T, H, W, 3) uint8 frames. ``fps``: the frame rate the file records
    (default: the source's; 30 for frames in memory).

    ``bpp`` (target bits per pixel) or ``quality`` (1..8, default 4) sets the model size, and
    the file lands on it (codec.video.rate); a ``bpp`` below the clip's minimum
    (codec.video.arch.min_bpp) is refused, a ``quality`` below it gives the minimum;
    ``frames`` keeps the first N frames, ``size`` ("WxH" or (w, h)) resizes, ``epochs``
    sets the training epochs of group 0 (later groups train half as many, warm-started;
    default: by ``effort``, "fast" 25, "default" 100, "max" 300 for up to 30 frames, fewer
    for longer clips: `effort_epochs`),
    ``group`` the frames per group (default: `default_group`), ``bits`` the weight bit depth (6..8),
    ``lr`` group 0's learning rate, ``batch`` the frames per training step (1: twice the
    steps of 2 for ~10 % more time, +0.5-0.7 dB on carphone at 0.1 bpp, docs/video.md).
    ``resume_dir`` keeps finished groups and a per-epoch checkpoint there; rerunning with
    the same arguments continues where it stopped. ``progress``: True for a bar on stderr,
    False for none, or a callable ``progress(done_epochs, total_epochs)`` (e.g. a web UI's bar).
    ``threads``: torch threads for the fit (restored afterwards; on a loaded 2-core machine 1
    thread was 15x faster than 2). ``on_group(index, frames)`` is called with the encoder's
    reconstruction of each group fitted in this run (what the decoder will output).
    """
    if threads is not None and threads < 1:
        raise NeurocodecError("threads must be >= 1")
    if model not in (None, "default", MODEL_NAME):
        raise NeurocodecError(f"unknown video model {model!r}; the video codec is {MODEL_NAME!r}")
    explicit_bpp = bpp is not None
    bpp, quality = _target_rate(bpp, quality)
    if not 2 <= bits <= 12:
        raise NeurocodecError(f"bits must be in 2..12, got {bits}")
    if group is not None and group < 1:
        raise NeurocodecError("group must be >= 1")
    n_frames, width, height = _count_frames(source, frames, size)
    group = int(group or default_group(n_frames, width, height))
    fps = video_fps(source) if fps is None else as_fraction(fps)
    if effort not in EFFORT_EPOCHS:
        raise NeurocodecError(f"effort must be one of {', '.join(EFFORT_EPOCHS)}, got {effort!r}")
    epochs = int(effort_epochs(effort, n_frames) if epochs is None else epochs)
    if epochs < 1:
        raise NeurocodecError("epochs must be >= 1")
    floor = min_bpp(width, height, n_frames, group)
    if bpp < floor and not explicit_bpp:
        bpp = floor  # a quality below what the clip can hold: its smallest file
    if bpp < floor:
        raise NeurocodecError(f"bpp {bpp:.4g} is too low for this clip ({width}x{height}, {n_frames} frames, "
                              f"groups of {group}): the smallest network needs at least {floor:.4g} bpp "
                              "(raise --bpp or --quality, or code more frames per group)")
    arch = plan_arch(width, height, n_frames, bpp, group, bits)
    n_groups = -(-n_frames // group)
    if n_groups > MAX_GROUPS:
        raise NeurocodecError(f"{n_groups} groups exceed the {MAX_GROUPS} a file can hold; use a larger group")
    fingerprint = {"source": _source_id(source), "frames": n_frames, "size": [width, height],
                   "bpp": bpp, "epochs": epochs, "group": group, "bits": bits, "seed": seed,
                   "arch": arch.to_bytes().hex(), "version": CODER_VERSION, "rate_control": 1, "lr": float(lr), "batch": int(batch)}
    resume = ResumeStore(resume_dir, fingerprint)
    settings = FitSettings(bits, seed, lr=float(lr), batch=int(batch))
    header = Header(media=MediaKind.VIDEO, model=MODEL_NAME, weights_hash=arch.hash8(), width=width,
                    height=height, pad_width=arch.cfg.out_w, pad_height=arch.cfg.out_h, color=COLOR,
                    quality=quality, coder={"version": CODER_VERSION, "family": FAMILY_ID,
                                            "precision": int(entropy.PRECISION)},
                    frames=n_frames, fps_num=fps.numerator, fps_den=fps.denominator,
                    extra={"group": group, "groups": n_groups})
    step_bytes = n_step_codes(tensor_specs(arch.cfg))
    overhead = len(_file(header, arch, np.zeros(step_bytes, dtype=np.uint8), [b""] * n_groups))
    payload = bpp * width * height * n_frames / 8 - overhead
    targets, weight_budgets = rate.group_targets(arch, n_frames, group, payload)
    with torch_threads(threads):
        step_codes, payloads = _fit_groups(source, frames, size, arch, group, n_groups, epochs, settings, resume,
                                           progress, on_group, height, width, targets, weight_budgets)
    return _file(header, arch, step_codes, payloads)


def _file(header: Header, arch: Arch, step_codes, payloads: list[bytes]) -> bytes:
    sections = [Section("arch", arch.to_bytes()),
                Section("wsteps", bytes(np.asarray(step_codes, dtype=np.uint8)))]
    sections += [Section(f"g{i}", p) for i, p in enumerate(payloads)]
    return write_container(header, sections)


def _fit_groups(source, frames, size, arch: Arch, group: int, n_groups: int, epochs: int, settings: FitSettings,
                resume: ResumeStore, progress, on_group, height: int, width: int,
                targets: list[float], weight_budgets: list[float]) -> tuple[np.ndarray, list]:
    """Fit every group not already in the resume store: (the clip's step codes, the payloads).
    ``targets``, ``weight_budgets``: the payloads' cumulative byte targets and the weights'
    bytes (codec.video.rate.group_targets)."""
    cfg = arch.cfg
    specs = tensor_specs(cfg)
    torch.manual_seed(settings.seed)
    decoder = HNeRVDecoder(cfg)
    encoder = EmbeddingEncoder(cfg.strides, cfg.c_emb)
    state = resume.load_state()
    step_codes, previous_ints, groups_done = None, None, 0
    if state is not None:
        load_model_tensors(decoder, encoder, state)
        step_codes = state["wcodes"].numpy().astype(np.int64)
        previous_ints = [state[f"ints.{i}"].numpy().astype(np.int64) for i in range(len(specs))]
        groups_done = int(state["done"])
    group_epochs = [epochs if gi == 0 else max(1, epochs // 2) for gi in range(n_groups)]
    bar = _progress_bar(progress, sum(group_epochs))
    payloads = []
    try:
        for gi, clip in enumerate(_groups_of(source, frames, size, group)):
            done = resume.group_payload(gi) if gi < groups_done else None
            if done is not None:
                payloads.append(done)
                if bar:
                    bar.update(group_epochs[gi])
                continue
            x = torch.from_numpy(clip).permute(0, 3, 1, 2).to(torch.float32) / 255.0
            spent = sum(len(p) for p in payloads)
            # bytes the earlier groups left unused raise this group's weight-delta budget (its
            # embeddings keep their planned share), so its deltas are not squeezed while the
            # file runs under its target (docs/video.md, "Several groups")
            slack = max(0.0, targets[gi - 1] - spent) if gi else 0.0
            job = GroupJob(gi, _pad(x, cfg.out_h, cfg.out_w), height, width, group_epochs[gi], step_codes,
                           previous_ints, byte_budget=targets[gi] - spent, weight_budget=weight_budgets[gi] + slack)
            step_codes, ints, group_data = fit_group(decoder, encoder, specs, settings, job, resume, bar)
            if on_group is not None:
                fresh = HNeRVDecoder(cfg).eval()  # rendered as the decoder does: a fresh module
                fresh.load_state_dict(decoder.state_dict())
                emb = dequantize(group_data.emb, group_data.emb_codes, (1, cfg.c_emb, 1, 1))
                on_group(gi, render(fresh, emb, height, width))
            payload = pack_group(group_data)
            payloads.append(payload)
            previous_ints = ints
            resume.save_group(gi, payload, finished_group_tensors(decoder, encoder, step_codes, ints, gi + 1))
    finally:
        if bar:
            bar.close()
    if len(payloads) != n_groups:
        raise NeurocodecError(f"source yielded {len(payloads)} groups, expected {n_groups} (file changed?)")
    return step_codes, payloads
