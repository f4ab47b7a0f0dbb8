"""The data model of a .ncf file: media kind, header, sections, limits, and the
validation rules shared by the writer and the reader."""
from __future__ import annotations

import enum
import math
import operator
import struct
from dataclasses import dataclass, field

from .wire import I64_MAX, I64_MIN, U64_MAX
from .errors import NcfError

__all__ = [
    "MediaKind", "Header", "Section", "Limits", "DEFAULT_LIMITS", "validate_header",
    "MAX_MODEL_BYTES", "MAX_COLOR_BYTES", "MAX_KEY_BYTES", "MAX_SECTION_NAME_BYTES",
    "MAX_CODER_ENTRIES", "MAX_EXTRA_ENTRIES", "MAX_PADDING", "WEIGHTS_HASH_BYTES", "MAX_FPS",
]

MAX_MODEL_BYTES = 64          # model preset name, UTF-8
MAX_COLOR_BYTES = 16          # colour format, printable ASCII
MAX_KEY_BYTES = 32            # keys of ``coder`` and ``extra``, printable ASCII
MAX_SECTION_NAME_BYTES = 32   # section names, printable ASCII
MAX_CODER_ENTRIES = 16
MAX_EXTRA_ENTRIES = 32
MAX_PADDING = 1024            # pad_width - width and pad_height - height at most this
WEIGHTS_HASH_BYTES = 8        # prefix of the weights' sha256
MAX_FPS = (1 << 32) - 1       # fps_num and fps_den are at most this


class MediaKind(enum.IntEnum):
    IMAGE = 1
    VIDEO = 2


@dataclass(frozen=True)
class Limits:
    """Resource limits a reader enforces before allocating anything."""
    max_pixels: int = 2 ** 28           # width * height of one frame
    max_frames: int = 100_000
    max_sections: int = 4096
    max_section_bytes: int = 2 ** 31 - 1
    max_file_bytes: int = 2 ** 34
    max_side: int = 65535 * 4           # width and height each


DEFAULT_LIMITS = Limits()


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


@dataclass(frozen=True)
class Header:
    """Everything a decoder needs to know before it reads a section.

    ``quality`` is stored as float32: the constructor rounds it, so a header
    compares equal to the one read back from its file.
    """
    media: MediaKind
    model: str
    weights_hash: bytes
    width: int
    height: int
    pad_width: int
    pad_height: int
    color: str
    quality: float
    coder: dict = field(default_factory=dict)
    frames: int = 1
    fps_num: int = 0
    fps_den: int = 1
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        # Lenient normalisation only; validate_header() is the judge of values.
        try:
            object.__setattr__(self, "media", MediaKind(self.media))
        except (ValueError, TypeError):
            pass
        try:
            q = float(self.quality)
            if math.isfinite(q):
                object.__setattr__(self, "quality", _f32(q))
        except (ValueError, TypeError, OverflowError):
            pass
        for name in ("coder", "extra"):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, dict(value))
        if isinstance(self.weights_hash, (bytearray, memoryview)):
            object.__setattr__(self, "weights_hash", bytes(self.weights_hash))

    @property
    def is_video(self) -> bool:
        return self.media == MediaKind.VIDEO


@dataclass(frozen=True)
class Section:
    """One named, CRC-protected byte payload (e.g. an entropy-coded stream)."""
    name: str
    data: bytes


# ---------------------------------------------------------------- validation

def _int(value, what: str) -> int:
    if isinstance(value, bool):
        raise NcfError(f"{what} must be an integer, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise NcfError(f"{what} must be an integer, got {type(value).__name__}") from None


def _ascii_token(value, what: str, max_bytes: int) -> bytes:
    """Printable ASCII without spaces (0x21..0x7E), 1..max_bytes long."""
    if not isinstance(value, str):
        raise NcfError(f"{what} must be a str, got {type(value).__name__}")
    raw = value.encode("utf-8", "surrogatepass")
    check_ascii_token(raw, what, max_bytes)
    return raw


def check_ascii_token(raw: bytes, what: str, max_bytes: int) -> None:
    if not 1 <= len(raw) <= max_bytes:
        raise NcfError(f"{what} is {len(raw)} bytes long, must be 1..{max_bytes}")
    for b in raw:
        if not 0x21 <= b <= 0x7E:
            raise NcfError(f"{what} {bytes(raw)!r} contains byte 0x{b:02x}; "
                           f"only printable ASCII 0x21..0x7e is allowed")


def check_model_bytes(raw: bytes, what: str = "model name") -> str:
    if not 1 <= len(raw) <= MAX_MODEL_BYTES:
        raise NcfError(f"{what} is {len(raw)} bytes long, must be 1..{MAX_MODEL_BYTES}")
    try:
        text = bytes(raw).decode("utf-8", "strict")
    except UnicodeDecodeError as e:
        raise NcfError(f"{what} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    for ch in text:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise NcfError(f"{what} {text!r} contains control character U+{ord(ch):04X}")
    return text


def model_bytes(value) -> bytes:
    if not isinstance(value, str):
        raise NcfError(f"model name must be a str, got {type(value).__name__}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise NcfError(f"model name {value!r} cannot be encoded as UTF-8") from None
    check_model_bytes(raw)
    return raw


def normalized_map(mapping, what: str, max_entries: int, signed: bool) -> list[tuple[bytes, int]]:
    """Validate a str->int map and return its entries sorted by key bytes."""
    if not isinstance(mapping, dict):
        raise NcfError(f"{what} must be a dict, got {type(mapping).__name__}")
    if len(mapping) > max_entries:
        raise NcfError(f"{what} has {len(mapping)} entries, at most {max_entries} allowed")
    items = []
    for key, value in mapping.items():
        kb = _ascii_token(key, f"{what} key", MAX_KEY_BYTES)
        v = _int(value, f"{what}[{key!r}]")
        check_map_value(v, f"{what}[{key!r}]", signed)
        items.append((kb, v))
    items.sort()
    return items


def check_map_value(v: int, what: str, signed: bool) -> None:
    if signed:
        if not I64_MIN <= v <= I64_MAX:
            raise NcfError(f"{what} = {v} outside the signed 64-bit range")
    elif not 0 <= v <= U64_MAX:
        raise NcfError(f"{what} = {v} outside [0, 2**64-1]")


def validate_header(header: Header, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check every header field against the format rules and ``limits``.

    Raises :class:`NcfError` naming the first offending field.
    """
    if not isinstance(header, Header):
        raise NcfError(f"expected a Header, got {type(header).__name__}")
    media = header.media
    if isinstance(media, bool) or media not in (MediaKind.IMAGE, MediaKind.VIDEO):
        raise NcfError(f"unknown media kind {media!r} (1=image, 2=video)")
    model_bytes(header.model)
    wh = header.weights_hash
    if not isinstance(wh, bytes) or len(wh) != WEIGHTS_HASH_BYTES:
        n = len(wh) if isinstance(wh, (bytes, bytearray)) else type(wh).__name__
        raise NcfError(f"weights_hash must be {WEIGHTS_HASH_BYTES} bytes, got {n}")
    check_dimensions(_int(header.width, "width"), _int(header.height, "height"),
                     _int(header.pad_width, "pad_width"), _int(header.pad_height, "pad_height"),
                     limits)
    _ascii_token(header.color, "colour format", MAX_COLOR_BYTES)
    try:
        q = float(header.quality)
    except (TypeError, ValueError):
        raise NcfError(f"quality must be a number, got {type(header.quality).__name__}") from None
    if not math.isfinite(q):
        raise NcfError(f"quality {q} is not finite")
    try:
        q32 = _f32(q)
    except OverflowError:
        raise NcfError(f"quality {q} does not fit in a float32") from None
    if not math.isfinite(q32):
        raise NcfError(f"quality {q} does not fit in a float32")
    normalized_map(header.coder, "coder", MAX_CODER_ENTRIES, signed=False)
    check_video(media, _int(header.frames, "frames"), _int(header.fps_num, "fps_num"),
                _int(header.fps_den, "fps_den"), limits)
    normalized_map(header.extra, "extra", MAX_EXTRA_ENTRIES, signed=True)


def check_dimensions(width: int, height: int, pad_width: int, pad_height: int,
                     limits: Limits) -> None:
    for what, v in (("width", width), ("height", height)):
        if not 1 <= v <= limits.max_side:
            raise NcfError(f"{what} {v} outside [1, {limits.max_side}] (limit max_side)")
    if width * height > limits.max_pixels:
        raise NcfError(f"image of {width}x{height} = {width * height} pixels exceeds "
                       f"the limit of {limits.max_pixels} (max_pixels)")
    for what, pad, orig in (("pad_width", pad_width, width), ("pad_height", pad_height, height)):
        if not orig <= pad <= orig + MAX_PADDING:
            raise NcfError(f"{what} {pad} outside [{orig}, {orig + MAX_PADDING}] "
                           f"(must be >= the original size, padding at most {MAX_PADDING})")


def check_video(media: int, frames: int, fps_num: int, fps_den: int, limits: Limits) -> None:
    if media == MediaKind.IMAGE:
        if frames != 1:
            raise NcfError(f"an image must have frames = 1, got {frames}")
    elif not 1 <= frames <= limits.max_frames:
        raise NcfError(f"frames {frames} outside [1, {limits.max_frames}] (limit max_frames)")
    if not 0 <= fps_num <= MAX_FPS:
        raise NcfError(f"fps_num {fps_num} outside [0, {MAX_FPS}]")
    if not 1 <= fps_den <= MAX_FPS:
        raise NcfError(f"fps_den {fps_den} outside [1, {MAX_FPS}]")
