"""Classical codecs at a given file size, for side-by-side comparisons (the web demo).

A rate-distortion curve compares codecs over many points; a person looking at one image
wants "what would JPEG give at the size of this file". :func:`encode_classical` answers
that by bisecting the codec's integer quality knob (``codec.eval.codecs`` adapters).
"""
from __future__ import annotations

import numpy as np

from codec.errors import NeurocodecError

# searched range of each codec's integer knob (quality for images, CRF for videos)
SEARCH_RANGE = {"jpeg": (1, 100), "webp": (0, 100), "avif": (0, 100), "jpegxl": (1, 100),
                "x264": (0, 51), "x265": (0, 51)}
VIDEO = ("x264", "x265")


def encode_classical(pixels: np.ndarray, codec: str, max_bytes: int, fps: float = 25.0) -> dict:
    """Encode ``pixels`` (HxWx3 image, or TxHxWx3 frames for x264/x265) with ``codec`` at the
    setting giving the largest file not above ``max_bytes``; when even the smallest setting is
    larger, that smallest file (``fits`` False). Returns codec, setting_name, setting, data,
    decoded and fits. Assumes file size is monotonic in the knob (true up to a few bytes)."""
    from codec.eval.codecs import CodecUnavailable, image_codec, video_codec

    name = codec.lower()
    if name not in SEARCH_RANGE:
        raise NeurocodecError(f"no size matching for codec {codec!r}; choose from {', '.join(SEARCH_RANGE)}")
    try:
        adapter = video_codec(name) if name in VIDEO else image_codec(name)
    except CodecUnavailable as e:
        raise NeurocodecError(str(e)) from None

    def encode(setting: int) -> bytes:
        if name in VIDEO:
            return adapter.encode(pixels, setting, fps=fps)
        return adapter.encode(pixels, setting)

    lo, hi = SEARCH_RANGE[name]
    more_bits = 1 if adapter.higher_is_better else -1  # knob direction that grows the file
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        data = encode(mid)
        fits = len(data) <= max_bytes
        if fits:
            best = (mid, data)
        if fits == (more_bits > 0):
            lo = mid + 1
        else:
            hi = mid - 1
    fits = best is not None
    if not fits:
        smallest = SEARCH_RANGE[name][0 if more_bits > 0 else 1]
        best = (smallest, encode(smallest))
    setting, data = best
    return {"codec": name, "setting_name": adapter.setting_name, "setting": setting, "data": data,
            "decoded": adapter.decode(data), "fits": fits}
