"""neurocodec: learned image (and video) compression into real .ncf files.

Public API (what the CLI, the GUI and users import):

- ``encode_image(image, model=None, quality=4.0, threads=None) -> bytes``: compress a path,
  file object, PIL image or HxWx3 uint8 array; quality is continuous in [1, 12] (1 = smallest
  file; above 6 a residual layer tops up the learned one); ``threads``: how many to compute on (None: every core; the file is the same for any).
- ``decode_image(data, threads=None) -> np.ndarray``: .ncf bytes back to an HxWx3 uint8 RGB
  array, bit-exactly the encoder's reconstruction, the same pixels on any thread count.
- ``encode_video(source, bpp=None, quality=None, frames=None, size=None, epochs=None) -> bytes``:
  fit the INR video codec (HNeRV-style, groups of frames) to a clip PyAV can read, a folder
  of PNGs or (T, H, W, 3) uint8 frames.
- ``decode_video(data, threads=None) -> np.ndarray``: (T, H, W, 3) uint8 frames, bit-exact.
- ``read_info(data_or_path) -> dict``: the header of an .ncf file, its sections and bpp.
- ``list_models() -> list[dict]``: every registered preset, whether its weights are shipped.
- ``read_frames(path, frames=None, size=None)``, ``write_frames(frames, path, fps)``: video
  files to (T, H, W, 3) uint8 arrays (resized as ``encode_video`` does) and back.
- ``psnr(a, b)``, ``ms_ssim(a, b)``: the metrics ``neurocodec eval`` reports.
- ``encode_classical(pixels, codec, max_bytes)``: JPEG, WebP, AVIF, x264... at a file size.

Layout: image/ and video/ (the pipelines), container/ (the .ncf format), entropy/ (the rANS
coder), zoo (model registry and weights), eval/ and train/, cli/ (argument wiring only).

Errors: ``NcfError`` for malformed files, ``NeurocodecError`` (and its ``WeightsError``)
for refused requests, ``EntropyCodingError`` for invalid coder input. Decoding untrusted
bytes raises ``NcfError`` or ``NeurocodecError`` and nothing else (docs/reliability.md).
``encode_image``, ``decode_image``, ``decode_video`` and ``read_info`` take ``limits=``
(``codec.container.Limits``) to lower or raise the resource limits.
"""
from __future__ import annotations

import importlib
import warnings
from pathlib import Path

# compressai's import triggers torch's deprecation notice about torch.jit.script: not the
# user's concern. Set here so that eval's worker processes (spawned) inherit it too.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")

# Attributes resolve lazily (PEP 562): `import codec.container` or `neurocodec --help`
# must not pay for importing torch and the models.
_LAZY = {
    "encode_image": "codec.image", "decode_image": "codec.image",
    "encode_video": "codec.video", "decode_video": "codec.video",
    "list_models": "codec.zoo",
    "read_frames": "codec.video", "write_frames": "codec.video",
    "psnr": "codec.eval.metrics", "ms_ssim": "codec.eval.metrics", "encode_classical": "codec.eval.compare",
    "NcfError": "codec.container", "EntropyCodingError": "codec.entropy",
    "NeurocodecError": "codec.errors", "WeightsError": "codec.errors",
}
__all__ = ["encode_image", "decode_image", "encode_video", "decode_video", "read_info", "list_models",
           "read_frames", "write_frames", "psnr", "ms_ssim", "encode_classical",
           "NcfError", "NeurocodecError", "WeightsError", "EntropyCodingError"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'codec' has no attribute {name!r}")


def read_info(data: bytes | str | Path, limits=None) -> dict:
    """Header fields, section sizes (and the sizes of the streams in an image's packed sections,
    z first), file size and bpp of an .ncf file (bytes or path)."""
    from codec.container import DEFAULT_LIMITS, MediaKind, read_container, unpack_streams

    if not isinstance(data, (bytes, bytearray, memoryview)):
        data = Path(data).read_bytes()
    header, sections = read_container(data, limits or DEFAULT_LIMITS)
    pixels = header.width * header.height * max(header.frames, 1)
    y_streams = header.coder.get("y_streams")
    packed = {s.name: [len(x) for x in unpack_streams(s.data, 1 + y_streams, f"section {s.name!r}")]
              for s in sections if header.media == MediaKind.IMAGE and y_streams is not None
              and s.name.rsplit("/", 1)[-1] == "streams"}
    return {
        "media": header.media.name.lower(),
        "model": header.model,
        "weights_hash": header.weights_hash.hex(),
        "width": header.width,
        "height": header.height,
        "padded": [header.pad_width, header.pad_height],
        "frames": header.frames,
        "fps": header.fps_num / header.fps_den if header.fps_num and header.fps_den else None,
        "color": header.color,
        "quality": header.quality,
        "coder": dict(header.coder),
        "sections": {s.name: len(s.data) for s in sections},
        **({"stream_bytes": packed} if packed else {}),
        "bytes": len(data),
        "bpp": len(data) * 8 / pixels,
    }
