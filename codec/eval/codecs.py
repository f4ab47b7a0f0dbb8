"""Codec adapters for the rate-distortion evaluation (``neurocodec eval``).

Every adapter turns pixels into real bytes and back, and records its exact
settings and library versions so that a result can be reproduced.

Image adapters work on ``HxWx3 uint8`` RGB arrays; ``setting`` is one number
(the codec's quality knob, e.g. JPEG quality, JPEG 2000 target PSNR, neurocodec
quality). Video adapters work on ``NxHxWx3 uint8`` RGB frames.

Adapters are created by name with :func:`image_codec` / :func:`video_codec` so
that worker processes can rebuild them from a picklable string.
"""

from __future__ import annotations

import functools
import io
import platform
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "CodecUnavailable",
    "ImageCodec",
    "VideoCodec",
    "IMAGE_CODECS",
    "VIDEO_CODECS",
    "image_codec",
    "video_codec",
    "expand_image_codecs",
    "expand_video_codecs",
]


class CodecUnavailable(RuntimeError):
    """Raised when a codec cannot be used here (library, encoder or weights missing)."""


def _imagecodecs_versions() -> dict[str, str]:
    import imagecodecs

    out = {"imagecodecs": imagecodecs.__version__}
    for item in imagecodecs.version().split(","):
        item = item.strip()
        if "-" in item:
            k, v = item.split("-", 1)
            out[k] = v
    return out


@functools.lru_cache(maxsize=None)
def _ic_versions() -> dict[str, str]:
    return _imagecodecs_versions()


# --------------------------------------------------------------------------- image


@dataclass(kw_only=True)
class CodecAdapter:
    """What image and video adapters share: a name, the setting knob and its default sweep,
    the exact fixed settings and library versions (recorded with every result)."""

    name: str
    description: str
    default_settings: list[float]
    setting_name: str
    encoder: Callable[..., bytes]
    decoder: Callable[[bytes], np.ndarray]
    fixed: dict[str, Any] = field(default_factory=dict)
    library: dict[str, str] = field(default_factory=dict)
    higher_is_better: bool = True  # a larger setting gives more bits
    integer: bool = True

    def normalize(self, setting: float) -> float | int:
        return int(round(setting)) if self.integer else float(setting)

    def settings(self, setting: float) -> dict[str, Any]:
        return {self.setting_name: self.normalize(setting), **self.fixed}

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "setting_name": self.setting_name,
            "fixed_settings": dict(self.fixed),
            "library": dict(self.library),
        }


@dataclass(kw_only=True)
class ImageCodec(CodecAdapter):
    """``encode(img, setting) -> bytes`` and ``decode(bytes) -> HxWx3 uint8``."""

    def encode(self, img: np.ndarray, setting: float) -> bytes:
        return bytes(self.encoder(np.ascontiguousarray(img), self.normalize(setting)))

    def decode(self, data: bytes) -> np.ndarray:
        out = np.asarray(self.decoder(data))
        if out.ndim == 2:
            out = np.repeat(out[..., None], 3, axis=2)
        if out.dtype != np.uint8:
            raise TypeError(f"{self.name}: decoder returned {out.dtype}, expected uint8")
        return out[..., :3]


def _require(codec_name: str, attr: str):
    import imagecodecs

    codec_cls = getattr(imagecodecs, attr.upper(), None)
    if codec_cls is None or not getattr(codec_cls, "available", False):
        raise CodecUnavailable(f"{codec_name}: imagecodecs was built without {attr}")


@dataclass(frozen=True)
class _ImagecodecsSpec:
    """An imagecodecs codec as an adapter: `<codec>_encode(img, level=setting, **encode)`."""
    codec: str          # imagecodecs' name: jpeg8, webp, avif, jpegxl, jpeg2k
    library: str        # the key of its library in imagecodecs.version()
    description: str    # formatted with {lib} (the library's version) and {ic} (imagecodecs')
    default_settings: tuple
    encode: dict
    fixed: dict         # the settings recorded with every point (encode's, and implied ones)
    decode: dict = field(default_factory=dict)
    setting_name: str = "quality"


_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
IMAGE_CODECS: dict[str, _ImagecodecsSpec] = {
    "jpeg": _ImagecodecsSpec(
        "jpeg8", "libjpeg_turbo", "JPEG (libjpeg-turbo {lib} via imagecodecs {ic}, 4:2:0, optimized Huffman)",
        _QUALITIES, {"subsampling": "420", "optimize": True},
        {"subsampling": "420", "optimize": True, "colorspace": "YCbCr"}),
    "webp": _ImagecodecsSpec(
        "webp", "libwebp", "WebP (libwebp {lib} via imagecodecs, lossy, method 6)",
        _QUALITIES, {"method": 6, "lossless": False}, {"method": 6, "lossless": False}),
    "avif": _ImagecodecsSpec(
        "avif", "libavif", "AVIF (libavif {lib} via imagecodecs, speed 6, libavif default AV1 encoder and "
        "pixel format)", (10, 20, 30, 40, 50, 60, 70, 80, 90), {"speed": 6, "numthreads": 1},
        {"speed": 6, "numthreads": 1}, decode={"numthreads": 1}),
    "jpegxl": _ImagecodecsSpec(
        "jpegxl", "libjxl", "JPEG XL (libjxl {lib} via imagecodecs, effort 7, quality mapped to distance by "
        "libjxl)", _QUALITIES, {"effort": 7, "numthreads": 1}, {"effort": 7, "numthreads": 1},
        decode={"numthreads": 1}),
    "jpeg2000": _ImagecodecsSpec(
        "jpeg2k", "openjpeg", "JPEG 2000 (OpenJPEG {lib} via imagecodecs, J2K codestream, irreversible 9/7 "
        "+ MCT, fixed-quality mode: setting = target PSNR in dB)", (22, 25, 28, 31, 34, 37, 40, 43, 46),
        {"codecformat": "J2K", "mct": True}, {"codecformat": "J2K", "mct": True, "reversible": False},
        setting_name="target_psnr_db"),
}


def _imagecodecs_adapter(name: str) -> ImageCodec:
    import imagecodecs

    spec = IMAGE_CODECS[name]
    _require(name, spec.codec)
    encode = getattr(imagecodecs, f"{spec.codec}_encode")
    decode = getattr(imagecodecs, f"{spec.codec}_decode")
    v = _ic_versions()
    lib = v.get(spec.library, "?")
    return ImageCodec(
        name=name,
        description=spec.description.format(lib=lib, ic=v["imagecodecs"]),
        default_settings=list(spec.default_settings),
        setting_name=spec.setting_name,
        encoder=lambda img, q: encode(img, level=q, **spec.encode),
        decoder=lambda data: decode(data, **spec.decode),
        fixed=dict(spec.fixed),
        library={"imagecodecs": v["imagecodecs"], spec.library: lib},
    )


def _neurocodec_models() -> list[dict]:
    try:
        import codec
    except Exception as exc:  # pragma: no cover - the package itself
        raise CodecUnavailable(f"neurocodec: cannot import codec: {exc}") from exc
    if not hasattr(codec, "list_models") or not hasattr(codec, "encode_image"):
        raise CodecUnavailable("neurocodec: the public API (codec.list_models/encode_image) "
                               "is not available in this version")
    return list(codec.list_models())


def _neurocodec(model: str, threads: int | None = None) -> ImageCodec:
    import codec
    from codec.image import CODER_VERSION

    models = {m["name"]: m for m in _neurocodec_models()}
    if model not in models:
        raise CodecUnavailable(f"neurocodec:{model}: no such model (known: {sorted(models)})")
    m = models[model]
    if m.get("kind", "image") != "image":
        raise CodecUnavailable(f"neurocodec:{model}: is a {m.get('kind')} model, not an image model")
    if not m.get("weights_shipped", False):
        raise CodecUnavailable(f"neurocodec:{model}: no weights shipped for this model")
    qmin, qmax = (m.get("qualities") or [1.0, 8.0])[:2]
    defaults = [float(q) for q in np.arange(qmin, qmax + 0.5)]  # every trained level
    version = getattr(codec, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as _v

            version = _v("neurocodec")
        except Exception:
            version = "?"
    try:
        import torch

        torch_v = torch.__version__
    except Exception:  # pragma: no cover
        torch_v = "?"
    fixed = {"model": model, "likelihood": m.get("likelihood")}
    for key in ("weights_sha256", "sha256", "hash", "preset"):
        if key in m:
            fixed[key] = m[key]
    if "weights_sha256" not in fixed:
        try:
            from codec import zoo

            fixed["weights_sha256"] = zoo.weights_sha256(model)
        except Exception:
            pass
    return ImageCodec(
        name=f"neurocodec:{model}",
        description=f"neurocodec {model} ({m.get('likelihood', '?')} likelihood), quality "
        f"{qmin:g}..{qmax:g}, real .ncf files",
        default_settings=defaults,
        setting_name="quality",
        encoder=lambda img, q: codec.encode_image(img, model=model, quality=float(q), threads=threads),
        decoder=lambda data: codec.decode_image(data, threads=threads),
        fixed=fixed,
        library={"neurocodec": str(version), "coder": str(CODER_VERSION), "torch": torch_v},
        integer=False,
    )


_ALIASES = {"jxl": "jpegxl", "j2k": "jpeg2000", "jp2": "jpeg2000", "jpeg2k": "jpeg2000"}


def image_codec(name: str, threads: int | None = None) -> ImageCodec:
    """The adapter for one codec name. neurocodec adapters are built anew every time (cheap):
    they record the sha256 of the weights installed now (`codec.zoo.weights_from` may switch);
    they code on `threads` threads (None: every core; the files do not depend on it)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key.startswith("neurocodec:"):
        return _neurocodec(name.split(":", 1)[1], threads)
    return _classical_image_codec(key)


@functools.lru_cache(maxsize=None)
def _classical_image_codec(key: str) -> ImageCodec:
    if key not in IMAGE_CODECS:
        raise CodecUnavailable(
            f"unknown image codec {key!r}; known: {', '.join(IMAGE_CODECS)}, neurocodec, "
            "neurocodec:MODEL"
        )
    return _imagecodecs_adapter(key)


def expand_image_codecs(names: Sequence[str], log: Callable[[str], None] = print) -> list[str]:
    """Expand ``neurocodec`` into every shipped image model; drop unavailable codecs
    with a clear message. Returns the list of usable adapter names."""
    out: list[str] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name.lower() == "neurocodec":
            try:
                models = _neurocodec_models()
            except CodecUnavailable as exc:
                log(f"skipping {exc}")
                continue
            shipped = [m["name"] for m in models
                       if m.get("kind", "image") == "image" and m.get("weights_shipped")]
            if not shipped:
                log("skipping neurocodec: no image model with shipped weights "
                    "(see `neurocodec models`)")
            for n in shipped:
                out.append(f"neurocodec:{n}")
            continue
        try:
            out.append(image_codec(name).name)
        except CodecUnavailable as exc:
            log(f"skipping {exc}")
    seen: set[str] = set()
    return [n for n in out if not (n in seen or seen.add(n))]


# --------------------------------------------------------------------------- video


def _av():
    try:
        import av  # noqa: F401
    except ImportError as exc:
        raise CodecUnavailable("PyAV is not installed (pip install av); classical video codecs "
                               "need it") from exc
    return av


@dataclass(kw_only=True)
class VideoCodec(CodecAdapter):
    """``encode(frames, setting, fps=...) -> bytes`` and ``decode(bytes) -> NxHxWx3 uint8``."""

    higher_is_better: bool = False  # crf: larger = fewer bits

    def encode(self, frames: np.ndarray, setting: float, *, fps: float = 25.0) -> bytes:
        return bytes(self.encoder(frames, self.normalize(setting), fps=fps))

    def decode(self, data: bytes) -> np.ndarray:
        return np.asarray(self.decoder(data))


# PyAV encoder name, raw stream format for the bytes, preset, default CRF sweep
_PYAV = {
    "x264": ("libx264", "h264", "medium", [18, 23, 28, 33, 38, 43]),
    "x265": ("libx265", "hevc", "medium", [18, 23, 28, 33, 38, 43]),
    "svtav1": ("libsvtav1", "ivf", "8", [25, 33, 41, 49, 57, 63]),
}
PRESET_CODECS = tuple(_PYAV)  # the video codecs that take an encoder preset


def _pyav_encode(frames: np.ndarray, crf: int, *, encoder: str, fmt: str, preset: str,
                 threads: int, fps: float) -> bytes:
    av = _av()
    from fractions import Fraction

    n, h, w, _ = frames.shape
    buf = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(encoder, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        opts = {"crf": str(crf), "preset": str(preset)}
        if encoder == "libx264":
            opts["threads"] = str(threads)
        elif encoder == "libx265":
            opts["x265-params"] = f"log-level=error:pools={threads}:frame-threads={threads}"
        elif encoder == "libsvtav1":
            opts["svtav1-params"] = f"lp={threads}"
        stream.options = opts
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = i
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return buf.getvalue()


def _pyav_decode(data: bytes, *, fmt: str) -> np.ndarray:
    av = _av()
    frames = []
    with av.open(io.BytesIO(data), mode="r", format=fmt) as inp:
        for frame in inp.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def _pyav_codec(name: str, threads: int = 1, preset: str | None = None) -> VideoCodec:
    """``preset``: the encoder's preset (default: the one in ``_PYAV``)."""
    av = _av()
    encoder, fmt, default_preset, crfs = _PYAV[name]
    preset = str(preset) if preset is not None else default_preset
    try:
        av.codec.Codec(encoder, "w")
    except Exception as exc:
        raise CodecUnavailable(f"{name}: this PyAV build (av {av.__version__}) has no "
                               f"{encoder} encoder") from exc
    libs = {"av": av.__version__,
            "libavcodec": ".".join(map(str, av.library_versions.get("libavcodec", ())))}
    fixed = {"encoder": encoder, "preset": preset, "pix_fmt": "yuv420p", "container": fmt,
             "threads": threads, "gop": "encoder default"}
    return VideoCodec(
        name=name,
        description=f"{name} via PyAV {av.__version__} ({encoder}, preset {preset}, CRF, "
        f"yuv420p, raw {fmt} stream)",
        default_settings=list(crfs),
        setting_name="crf",
        fixed=fixed,
        library=libs,
        encoder=functools.partial(_pyav_encode, encoder=encoder, fmt=fmt, preset=preset,
                                  threads=threads),
        decoder=functools.partial(_pyav_decode, fmt=fmt),
    )


def _neurocodec_video(model: str | None, epochs: int | None = None) -> VideoCodec:
    from codec.video import decode_video, encode_video
    from codec.video.codec import MAX_GROUP_FRAMES

    def enc(frames, quality, *, fps):
        kwargs: dict[str, Any] = {"quality": float(quality), "progress": False, "fps": fps}
        if model:
            kwargs["model"] = model
        if epochs is not None:
            kwargs["epochs"] = int(epochs)
        return encode_video(frames, **kwargs)

    def dec(data):
        return np.stack([np.asarray(f) for f in decode_video(data)])

    try:
        from importlib.metadata import version as _v

        version = _v("neurocodec")
    except Exception:
        version = "?"
    fixed = {"model": model or "default", "epochs": epochs if epochs is not None else "default",
             "group": f"default (the whole clip up to {MAX_GROUP_FRAMES} frames)"}
    return VideoCodec(
        name=f"neurocodec:{model}" if model else "neurocodec",
        description="neurocodec INR video codec" + (f" ({model})" if model else "")
        + (f", {epochs} epochs" if epochs else ""),
        default_settings=[2.0, 4.0, 6.0, 8.0],
        setting_name="quality",
        fixed=fixed,
        library={"neurocodec": str(version)},
        encoder=enc,
        decoder=dec,
        higher_is_better=True,
        integer=False,
    )


VIDEO_CODECS = ("x264", "x265", "svtav1", "neurocodec")


@functools.lru_cache(maxsize=None)
def video_codec(name: str, threads: int = 1, epochs: int | None = None,
                preset: str | None = None) -> VideoCodec:
    """``threads``: encoder threads of the PyAV codecs; ``epochs``: neurocodec training;
    ``preset``: encoder preset of a PyAV codec (None: its default)."""
    key = name.lower()
    if key in _PYAV:
        return _pyav_codec(key, threads, preset)
    if preset is not None:
        raise ValueError(f"{name}: no encoder presets (only {', '.join(PRESET_CODECS)} have them)")
    if key == "neurocodec":
        return _neurocodec_video(None, epochs)
    if key.startswith("neurocodec:"):
        return _neurocodec_video(name.split(":", 1)[1], epochs)
    raise CodecUnavailable(f"unknown video codec {name!r}; known: {', '.join(VIDEO_CODECS)}")


def expand_video_codecs(names: Sequence[str], threads: int = 1,
                        log: Callable[[str], None] = print,
                        epochs: int | None = None,
                        presets: dict[str, str] | None = None) -> list[str]:
    out: list[str] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        try:
            out.append(video_codec(name, threads, epochs, (presets or {}).get(name.lower())).name)
        except CodecUnavailable as exc:
            log(f"skipping {exc}")
    seen: set[str] = set()
    return [n for n in out if not (n in seen or seen.add(n))]


def environment() -> dict[str, str]:
    """Versions of everything that affects the numbers."""
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "numpy": np.__version__}
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("neurocodec", "imagecodecs", "pillow", "torch", "pytorch-msssim", "av",
                 "scipy"):
        try:
            env[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return env
