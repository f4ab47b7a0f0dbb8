"""Serialising and parsing .ncf files.  See docs/format.md for the byte layout."""
from __future__ import annotations

import functools
import zlib

from .wire import (Cursor, encode_uvarint, pack_f32, pack_u16, pack_u32, zigzag_decode,
                    zigzag_encode)
from .errors import NcfError
from .schema import (DEFAULT_LIMITS, MAX_CODER_ENTRIES, MAX_COLOR_BYTES, MAX_EXTRA_ENTRIES,
                     MAX_KEY_BYTES, MAX_MODEL_BYTES, MAX_SECTION_NAME_BYTES, WEIGHTS_HASH_BYTES,
                     Header, Limits, MediaKind, Section, _ascii_token, check_ascii_token,
                     check_dimensions, check_map_value, check_model_bytes, check_video,
                     model_bytes, normalized_map, validate_header)

__all__ = ["MAGIC", "FORMAT_VERSION", "MAX_HEADER_BYTES", "MAX_HEADER_PREFIX",
           "write_container", "read_container", "read_header", "sections_by_name",
           "pack_streams", "unpack_streams", "get_section"]

MAGIC = b"NCF\x00\r\n\x1a\n"     # 8 bytes; the CR/LF/^Z bytes catch text-mode mangling
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 4096          # bound on the header body length
# magic + version + header-length varint (<= 2 bytes for 4096) + body + CRC:
MAX_HEADER_PREFIX = len(MAGIC) + 2 + 2 + MAX_HEADER_BYTES + 4
MIN_SECTION_BYTES = 1 + 1 + 1 + 4  # name length, 1-byte name, data length 0, CRC


# ------------------------------------------------------------------ writing

def _lp(raw: bytes) -> bytes:
    """Length-prefixed bytes: uvarint length then the bytes."""
    return encode_uvarint(len(raw)) + raw


def _encode_map(items: list[tuple[bytes, int]], signed: bool) -> bytes:
    out = [encode_uvarint(len(items))]
    for key, value in items:
        out.append(_lp(key))
        out.append(encode_uvarint(zigzag_encode(value) if signed else value))
    return b"".join(out)


def encode_header_body(header: Header) -> bytes:
    """The header body bytes; assumes a validated header (see write_container)."""
    coder = normalized_map(header.coder, "coder", MAX_CODER_ENTRIES, signed=False)
    extra = normalized_map(header.extra, "extra", MAX_EXTRA_ENTRIES, signed=True)
    return b"".join([
        bytes([int(header.media)]),
        _lp(model_bytes(header.model)),
        bytes(header.weights_hash),
        encode_uvarint(int(header.width)),
        encode_uvarint(int(header.height)),
        encode_uvarint(int(header.pad_width)),
        encode_uvarint(int(header.pad_height)),
        _lp(header.color.encode("ascii")),
        pack_f32(float(header.quality)),
        _encode_map(coder, signed=False),
        encode_uvarint(int(header.frames)),
        encode_uvarint(int(header.fps_num)),
        encode_uvarint(int(header.fps_den)),
        _encode_map(extra, signed=True),
    ])


def frame_header(body: bytes, version: int = FORMAT_VERSION) -> bytes:
    """Magic, version, body length, body and header CRC (no validation)."""
    head = MAGIC + pack_u16(version) + encode_uvarint(len(body)) + body
    return head + pack_u32(zlib.crc32(head))


def encode_section(name: bytes, data) -> bytes:
    record = _lp(name) + encode_uvarint(len(data)) + bytes(data)
    return record + pack_u32(zlib.crc32(record))


def write_container(header: Header, sections: list[Section]) -> bytes:
    """Serialise ``header`` and ``sections`` (in order) into .ncf bytes.

    The header is validated against :data:`DEFAULT_LIMITS`; section names must be
    unique printable ASCII of 1..32 bytes.  Invalid arguments raise ValueError
    (a programming error, not a bad file).
    """
    limits = DEFAULT_LIMITS
    try:
        validate_header(header, limits)
    except NcfError as e:
        raise ValueError(f"invalid header: {e}") from None
    try:
        sections = list(sections)
    except TypeError:
        raise ValueError("sections must be an iterable of Section") from None
    if len(sections) > limits.max_sections:
        raise ValueError(f"{len(sections)} sections, at most {limits.max_sections} allowed")
    body = encode_header_body(header)
    if len(body) > MAX_HEADER_BYTES:  # cannot happen with the field bounds; belt and braces
        raise ValueError(f"header body is {len(body)} bytes, at most {MAX_HEADER_BYTES}")
    parts = [frame_header(body), encode_uvarint(len(sections))]
    seen = set()
    total = len(parts[0]) + len(parts[1])
    for i, sec in enumerate(sections):
        if not isinstance(sec, Section):
            raise ValueError(f"section {i} is a {type(sec).__name__}, not a Section")
        try:
            name = _ascii_token(sec.name, f"section {i} name", MAX_SECTION_NAME_BYTES)
        except NcfError as e:
            raise ValueError(str(e)) from None
        if name in seen:
            raise ValueError(f"duplicate section name {sec.name!r}")
        seen.add(name)
        try:
            data = memoryview(sec.data).cast("B")
        except TypeError:
            raise ValueError(f"section {i} {sec.name!r}: data must be bytes-like, "
                             f"got {type(sec.data).__name__}") from None
        if len(data) > limits.max_section_bytes:
            raise ValueError(f"section {i} {sec.name!r}: {len(data)} bytes exceeds "
                             f"max_section_bytes {limits.max_section_bytes}")
        rec = encode_section(name, data)
        total += len(rec)
        parts.append(rec)
    if total > limits.max_file_bytes:
        raise ValueError(f"file would be {total} bytes, exceeds max_file_bytes {limits.max_file_bytes}")
    return b"".join(parts)


# ------------------------------------------------------------------ reading

def _guard(func):
    """Turn any non-NcfError exception escaping a parser into NcfError."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except NcfError:
            raise
        except Exception as e:  # noqa: BLE001 - the contract is: only NcfError escapes
            raise NcfError(f"malformed file ({type(e).__name__}: {e})") from e
    return wrapper


def _as_view(data) -> memoryview:
    if isinstance(data, str):
        raise NcfError("expected bytes, got str (open the file in binary mode)")
    try:
        view = memoryview(data)
    except TypeError:
        raise NcfError(f"expected a bytes-like object, got {type(data).__name__}") from None
    try:
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    except TypeError:
        raise NcfError("expected a contiguous bytes-like object") from None


def _read_lp(cur: Cursor, what: str, max_len: int, min_len: int = 1) -> memoryview:
    start = cur.pos
    n = cur.uvarint(f"{what} length")
    if not min_len <= n <= max_len:
        raise NcfError(f"{what} length {n} at offset {start} outside [{min_len}, {max_len}]")
    return cur.take(n, what)


def _read_map(cur: Cursor, what: str, max_entries: int, signed: bool) -> dict:
    start = cur.pos
    count = cur.uvarint(f"{what} entry count")
    if count > max_entries:
        raise NcfError(f"{what} entry count {count} at offset {start} exceeds {max_entries}")
    out = {}
    prev = None
    for _ in range(count):
        kpos = cur.pos
        key = bytes(_read_lp(cur, f"{what} key", MAX_KEY_BYTES))
        check_ascii_token(key, f"{what} key", MAX_KEY_BYTES)
        if prev is not None and key <= prev:
            raise NcfError(f"{what} key {key.decode('ascii')!r} at offset {kpos} is "
                           f"{'a duplicate' if key == prev else 'out of order'} "
                           f"(keys must be strictly increasing)")
        prev = key
        raw = cur.uvarint(f"{what}[{key.decode('ascii')!r}]")
        value = zigzag_decode(raw) if signed else raw
        check_map_value(value, f"{what}[{key.decode('ascii')!r}]", signed)
        out[key.decode("ascii")] = value
    return out


def _parse_header(buf: memoryview, limits: Limits) -> tuple[Header, int]:
    """Parse magic..header CRC; return the header and the offset after the CRC."""
    n = len(buf)
    if n < len(MAGIC):
        if bytes(buf) == MAGIC[:n]:
            raise NcfError(f"truncated: {n} bytes, too short for the {len(MAGIC)}-byte magic")
        raise NcfError("bad magic: not a neurocodec file")
    if bytes(buf[:len(MAGIC)]) != MAGIC:
        raise NcfError("bad magic: not a neurocodec file")
    cur = Cursor(buf, len(MAGIC))
    version = cur.u16("format version")
    if version != FORMAT_VERSION:
        raise NcfError(f"unsupported format version {version} "
                       f"(this reader supports {FORMAT_VERSION})")
    hpos = cur.pos
    body_len = cur.uvarint("header length")
    if not 1 <= body_len <= MAX_HEADER_BYTES:
        raise NcfError(f"header length {body_len} at offset {hpos} outside [1, {MAX_HEADER_BYTES}]")
    body_start = cur.pos
    if body_len + 4 > cur.remaining:
        raise NcfError(f"truncated: header of {body_len} bytes plus CRC at offset {body_start} "
                       f"needs {body_len + 4} bytes, only {cur.remaining} remain")
    body_end = body_start + body_len
    stored = int.from_bytes(buf[body_end:body_end + 4], "little")
    computed = zlib.crc32(buf[:body_end])
    if stored != computed:
        raise NcfError(f"header CRC mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})")

    cur = Cursor(buf, body_start, body_end)
    media_pos = cur.pos
    media = cur.u8("media kind")
    if media not in (1, 2):
        raise NcfError(f"unknown media kind {media} at offset {media_pos} (1=image, 2=video)")
    model = check_model_bytes(_read_lp(cur, "model name", MAX_MODEL_BYTES))
    weights_hash = bytes(cur.take(WEIGHTS_HASH_BYTES, "weights hash"))
    width = cur.uvarint("width")
    height = cur.uvarint("height")
    pad_width = cur.uvarint("pad_width")
    pad_height = cur.uvarint("pad_height")
    check_dimensions(width, height, pad_width, pad_height, limits)
    color_raw = bytes(_read_lp(cur, "colour format", MAX_COLOR_BYTES))
    check_ascii_token(color_raw, "colour format", MAX_COLOR_BYTES)
    qpos = cur.pos
    quality = cur.f32("quality")
    if quality != quality or quality in (float("inf"), float("-inf")):
        raise NcfError(f"quality at offset {qpos} is not finite ({quality})")
    coder = _read_map(cur, "coder", MAX_CODER_ENTRIES, signed=False)
    frames = cur.uvarint("frames")
    fps_num = cur.uvarint("fps_num")
    fps_den = cur.uvarint("fps_den")
    check_video(media, frames, fps_num, fps_den, limits)
    extra = _read_map(cur, "extra", MAX_EXTRA_ENTRIES, signed=True)
    if cur.remaining:
        raise NcfError(f"header has {cur.remaining} unparsed bytes at offset {cur.pos}")
    header = Header(media=MediaKind(media), model=model, weights_hash=weights_hash,
                    width=width, height=height, pad_width=pad_width, pad_height=pad_height,
                    color=color_raw.decode("ascii"), quality=quality, coder=coder,
                    frames=frames, fps_num=fps_num, fps_den=fps_den, extra=extra)
    return header, body_end + 4


def _check_size(buf: memoryview, limits: Limits) -> None:
    if len(buf) > limits.max_file_bytes:
        raise NcfError(f"file of {len(buf)} bytes exceeds max_file_bytes {limits.max_file_bytes}")


@_guard
def read_header(data, limits: Limits = DEFAULT_LIMITS) -> Header:
    """Parse and validate only the header.

    ``data`` may be the whole file or any prefix that contains the complete
    header (reading :data:`MAX_HEADER_PREFIX` bytes always suffices).
    """
    buf = _as_view(data)
    header, _ = _parse_header(buf, limits)
    return header


@_guard
def read_container(data, limits: Limits = DEFAULT_LIMITS) -> tuple[Header, list[Section]]:
    """Parse and fully validate a .ncf file; raise :class:`NcfError` on any defect."""
    buf = _as_view(data)
    _check_size(buf, limits)
    header, pos = _parse_header(buf, limits)
    cur = Cursor(buf, pos)
    cpos = cur.pos
    count = cur.uvarint("section count")
    if count > limits.max_sections:
        raise NcfError(f"section count {count} at offset {cpos} exceeds "
                       f"max_sections {limits.max_sections}")
    if count * MIN_SECTION_BYTES > cur.remaining:
        raise NcfError(f"truncated: {count} sections need at least {count * MIN_SECTION_BYTES} "
                       f"bytes, only {cur.remaining} remain")
    sections: list[Section] = []
    seen: set[str] = set()
    for i in range(count):
        start = cur.pos
        raw_name = bytes(_read_lp(cur, f"section {i} name", MAX_SECTION_NAME_BYTES))
        check_ascii_token(raw_name, f"section {i} name", MAX_SECTION_NAME_BYTES)
        name = raw_name.decode("ascii")
        lpos = cur.pos
        length = cur.uvarint(f"section {i} {name!r} length")
        if length > limits.max_section_bytes:
            raise NcfError(f"section {i} {name!r}: declared length {length} exceeds "
                           f"max_section_bytes {limits.max_section_bytes}")
        avail = max(cur.remaining - 4, 0)
        if length > avail:
            raise NcfError(f"section {i} {name!r}: declared length {length} at offset {lpos} "
                           f"exceeds remaining {avail} bytes")
        payload = cur.take(length, f"section {i} {name!r} data")
        end = cur.pos
        stored = cur.u32(f"section {i} {name!r} CRC")
        computed = zlib.crc32(buf[start:end])
        if stored != computed:
            raise NcfError(f"CRC mismatch in section {i} {name!r} "
                           f"(stored 0x{stored:08x}, computed 0x{computed:08x})")
        if name in seen:
            raise NcfError(f"duplicate section name {name!r} (section {i})")
        seen.add(name)
        sections.append(Section(name=name, data=bytes(payload)))
    if cur.remaining:
        raise NcfError(f"{cur.remaining} bytes of trailing garbage at offset {cur.pos}")
    return header, sections


def sections_by_name(sections: list[Section]) -> dict[str, bytes]:
    """``{name: data}`` in file order; duplicate names raise NcfError."""
    out: dict[str, bytes] = {}
    for sec in sections:
        if sec.name in out:
            raise NcfError(f"duplicate section name {sec.name!r}")
        out[sec.name] = sec.data
    return out


def pack_streams(streams: list[bytes]) -> bytes:
    """Several byte strings as one section's data, each as ``bytes[n]`` (docs/format.md, coder
    version 3): one name, length and CRC for all of them instead of one each."""
    return b"".join(_lp(bytes(s)) for s in streams)


@_guard
def unpack_streams(data, count: int, what: str) -> list[bytes]:
    """The ``count`` byte strings of :func:`pack_streams`; a short, long or malformed packing
    raises NcfError."""
    cur = Cursor(_as_view(data))
    out = [bytes(_read_lp(cur, f"{what} stream {i}", cur.remaining, min_len=0)) for i in range(count)]
    if cur.remaining:
        raise NcfError(f"{what}: {cur.remaining} bytes after its {count} streams")
    return out


def get_section(sections: list[Section], name: str) -> bytes:
    """The data of section ``name``; a missing section is a malformed file (NcfError)."""
    for sec in sections:
        if sec.name == name:
            return sec.data
    have = ", ".join(repr(s.name) for s in sections) or "none"
    raise NcfError(f"missing required section {name!r} (file has: {have})")
