"""Tests for codec.container: round trips, every bound, and hostile input.

The contract under test: read_container/read_header raise NcfError and nothing
else for any input, and they refuse oversized declarations before allocating.
"""
from __future__ import annotations

import re
import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec.container import (DEFAULT_LIMITS, FORMAT_VERSION, MAGIC, MAX_HEADER_PREFIX, Header,
                             Limits, MediaKind, NcfError, Section, get_section, read_container,
                             read_header, sections_by_name, validate_header, write_container)
from codec.container.wire import encode_uvarint, zigzag_encode

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------- helpers

def make_header(**kw) -> Header:
    fields = dict(media=MediaKind.IMAGE, model="mbt-mean-s", weights_hash=bytes(range(8)),
                  width=3, height=2, pad_width=64, pad_height=64, color="rgb8", quality=0.5,
                  coder={"precision": 16, "version": 1})
    fields.update(kw)
    return Header(**fields)


def small_file() -> bytes:
    return write_container(make_header(), [Section("z", b"ab"), Section("y0", b"hello")])


def uv(n: int) -> bytes:
    return encode_uvarint(n)


def lp(raw: bytes) -> bytes:
    return uv(len(raw)) + raw


def raw_body(*, media=1, model=b"m", weights_hash=bytes(8), width=3, height=2, pad_width=4,
             pad_height=4, color=b"rgb8", quality=0.5, coder=(), frames=1, fps_num=0,
             fps_den=1, extra=(), quality_bytes=None) -> bytes:
    """A header body built field by field with NO validation (to craft bad files)."""
    out = bytes([media]) + lp(model) + weights_hash
    out += uv(width) + uv(height) + uv(pad_width) + uv(pad_height) + lp(color)
    out += quality_bytes if quality_bytes is not None else struct.pack("<f", quality)
    out += uv(len(coder)) + b"".join(lp(k) + uv(v) for k, v in coder)
    out += uv(frames) + uv(fps_num) + uv(fps_den)
    out += uv(len(extra)) + b"".join(lp(k) + uv(zigzag_encode(v)) for k, v in extra)
    return out


def raw_head(body: bytes, version: int = FORMAT_VERSION, magic: bytes = MAGIC) -> bytes:
    head = magic + struct.pack("<H", version) + uv(len(body)) + body
    return head + struct.pack("<I", zlib.crc32(head))


def raw_section(name: bytes, data: bytes, length: int | None = None, crc: int | None = None) -> bytes:
    rec = lp(name) + uv(len(data) if length is None else length) + data
    return rec + struct.pack("<I", zlib.crc32(rec) if crc is None else crc)


def raw_file(body: bytes | None = None, sections=((b"z", b"ab"),), count: int | None = None,
             **kw) -> bytes:
    body = raw_body() if body is None else body
    recs = [raw_section(n, d) for n, d in sections]
    return raw_head(body, **kw) + uv(len(recs) if count is None else count) + b"".join(recs)


def assert_ncf_error(data, match: str | None = None, limits: Limits = DEFAULT_LIMITS):
    with pytest.raises(NcfError) as info:
        read_container(data, limits)
    if match is not None:
        assert re.search(match, str(info.value)), str(info.value)
    return info.value


def parse_or_ncf_error(data: bytes) -> None:
    """The only acceptable outcomes: a parse, or NcfError."""
    try:
        read_container(data)
    except NcfError:
        pass
    try:
        read_header(data)
    except NcfError:
        pass


# ----------------------------------------------------------------- strategies

token = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                max_size=8)


@st.composite
def headers(draw):
    media = draw(st.sampled_from(list(MediaKind)))
    width = draw(st.integers(1, 5000))
    height = draw(st.integers(1, 5000))
    frames = 1 if media == MediaKind.IMAGE else draw(st.integers(1, DEFAULT_LIMITS.max_frames))
    return Header(
        media=media,
        model=draw(st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_categories=("Cs", "Cc")),
                           min_size=1, max_size=16)),
        weights_hash=draw(st.binary(min_size=8, max_size=8)),
        width=width, height=height,
        pad_width=width + draw(st.integers(0, 1024)), pad_height=height + draw(st.integers(0, 1024)),
        color=draw(token),
        quality=draw(st.floats(width=32, allow_nan=False, allow_infinity=False)),
        coder=draw(st.dictionaries(token, st.integers(0, 2**64 - 1), max_size=16)),
        frames=frames,
        fps_num=draw(st.integers(0, 2**32 - 1)), fps_den=draw(st.integers(1, 2**32 - 1)),
        extra=draw(st.dictionaries(token, st.integers(-2**63, 2**63 - 1), max_size=32)),
    )


@st.composite
def section_lists(draw):
    names = draw(st.lists(token, max_size=8, unique=True))
    return [Section(n, draw(st.binary(max_size=64))) for n in names]


# ----------------------------------------------------------------- round trips

@FAST
@given(headers(), section_lists())
def test_round_trip(header, sections):
    blob = write_container(header, sections)
    h2, s2 = read_container(blob)
    assert h2 == header
    assert s2 == sections
    assert read_header(blob) == header
    assert read_header(blob[:MAX_HEADER_PREFIX]) == header
    assert read_container(memoryview(blob)) == (h2, s2)
    assert read_container(bytearray(blob)) == (h2, s2)
    assert write_container(h2, s2) == blob  # canonical: one file per (header, sections)


def test_small_file_layout():
    blob = small_file()
    assert blob.startswith(MAGIC)
    assert blob[8:10] == struct.pack("<H", FORMAT_VERSION)
    header, sections = read_container(blob)
    assert header == make_header()
    assert sections_by_name(sections) == {"z": b"ab", "y0": b"hello"}
    assert get_section(sections, "y0") == b"hello"
    with pytest.raises(NcfError, match="missing required section 'y1'"):
        get_section(sections, "y1")


def test_quality_is_float32_and_dicts_copied():
    coder = {"precision": 16}
    h = make_header(quality=0.1, coder=coder)
    coder["x"] = 1
    assert h.coder == {"precision": 16}
    assert h.quality == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert read_container(write_container(h, []))[0] == h


def test_numpy_ints_accepted_by_writer():
    np = pytest.importorskip("numpy")
    h = make_header(width=np.int64(3), height=np.int32(2), quality=np.float32(0.25))
    assert read_container(write_container(h, []))[0].width == 3


def test_video_header_and_empty_sections():
    h = make_header(media=MediaKind.VIDEO, frames=30, fps_num=30000, fps_den=1001,
                    extra={"gop": 8, "offset": -3})
    back, secs = read_container(write_container(h, [Section("empty", b"")]))
    assert back == h and back.is_video and secs == [Section("empty", b"")]


def test_docs_hex_example_matches():
    """docs/format.md shows a hex dump of small_file(); keep them in sync."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "format.md").read_text()
    block = text.split("<!-- hexdump -->")[1]
    hexes = re.findall(r"^[0-9a-f]{8}: ((?:[0-9a-f]{2} ?)+)", block, re.M)
    assert bytes.fromhex("".join(hexes)) == small_file()


# ----------------------------------------------------------------- writer validation

@pytest.mark.parametrize("kw, match", [
    (dict(media=3), "media kind"),
    (dict(model=""), "model name"),
    (dict(model="x" * 65), "model name"),
    (dict(model="a\nb"), "control character"),
    (dict(weights_hash=b"123"), "weights_hash"),
    (dict(width=0), "width"),
    (dict(width=-1), "width"),
    (dict(height=2**40), "height"),
    (dict(width=1.5), "integer"),
    (dict(width=65535 * 4, height=65535 * 4, pad_width=65535 * 4, pad_height=65535 * 4), "max_pixels"),
    (dict(pad_width=2), "pad_width"),
    (dict(pad_height=2000), "pad_height"),
    (dict(color=""), "colour"),
    (dict(color="rgb 8"), "colour"),
    (dict(color="x" * 17), "colour"),
    (dict(quality=float("nan")), "quality"),
    (dict(quality=float("inf")), "quality"),
    (dict(quality=1e39), "float32"),
    (dict(quality="high"), "quality"),
    (dict(coder={"p": -1}), "coder"),
    (dict(coder={"p": 2**64}), "coder"),
    (dict(coder={f"k{i}": i for i in range(17)}), "coder"),
    (dict(coder={"": 1}), "coder key"),
    (dict(coder=[("a", 1)]), "dict"),
    (dict(extra={"e": 2**63}), "extra"),
    (dict(extra={f"k{i}": i for i in range(33)}), "extra"),
    (dict(frames=2), "frames = 1"),
    (dict(media=MediaKind.VIDEO, frames=0), "frames"),
    (dict(media=MediaKind.VIDEO, frames=100_001), "max_frames"),
    (dict(fps_num=-1), "fps_num"),
    (dict(fps_den=0), "fps_den"),
    (dict(fps_den=2**32), "fps_den"),
])
def test_writer_rejects_bad_header(kw, match):
    with pytest.raises(ValueError, match=match) as info:
        write_container(make_header(**kw), [])
    assert not isinstance(info.value, NcfError)  # a programming error, not a bad file


@pytest.mark.parametrize("sections, match", [
    ([Section("z", b""), Section("z", b"")], "duplicate"),
    ([Section("", b"")], "name"),
    ([Section("a b", b"")], "name"),
    ([Section("x" * 33, b"")], "name"),
    ([Section("é", b"")], "name"),
    ([Section("z", "text")], "bytes-like"),
    (["z"], "not a Section"),
    ([Section(f"s{i}", b"") for i in range(4097)], "4096"),
])
def test_writer_rejects_bad_sections(sections, match):
    with pytest.raises(ValueError, match=match):
        write_container(make_header(), sections)


# ----------------------------------------------------------------- reader: crafted bad fields

def test_crafted_baseline_is_valid():
    header, sections = read_container(raw_file())
    assert header.model == "m" and sections == [Section("z", b"ab")]


@pytest.mark.parametrize("kw, match", [
    (dict(media=0), "unknown media kind 0"),
    (dict(media=255), "unknown media kind 255"),
    (dict(model=b""), "model name length 0"),
    (dict(model=b"x" * 65), "model name length 65"),
    (dict(model=b"\xff\xfe"), "not valid UTF-8"),
    (dict(model=b"a\x00"), "control character"),
    (dict(width=0), "width 0 outside"),
    (dict(width=2**64 - 1), "width .* outside"),
    (dict(height=65535 * 4 + 1), "max_side"),
    (dict(width=2**17, height=2**12, pad_width=2**17, pad_height=2**12), "max_pixels"),
    (dict(width=65535 * 4, height=65535 * 4, pad_width=65535 * 4, pad_height=65535 * 4), "max_pixels"),
    (dict(pad_width=2), "pad_width 2"),
    (dict(pad_height=10**12), "pad_height"),
    (dict(color=b""), "colour format length 0"),
    (dict(color=b"x" * 17), "colour format length 17"),
    (dict(color=b"rg\x00"), "colour format"),
    (dict(quality_bytes=struct.pack("<f", float("nan"))), "quality .* not finite"),
    (dict(quality_bytes=struct.pack("<f", float("-inf"))), "quality .* not finite"),
    (dict(coder=[(b"b", 1), (b"a", 2)]), "out of order"),
    (dict(coder=[(b"a", 1), (b"a", 2)]), "duplicate"),
    (dict(coder=[(b"", 1)]), "coder key length 0"),
    (dict(coder=[(b"k%d" % i, i) for i in range(17)]), "coder entry count 17"),
    (dict(extra=[(b"k%02d" % i, i) for i in range(33)]), "extra entry count 33"),
    (dict(frames=0), "frames = 1"),
    (dict(frames=2**63), "frames = 1"),
    (dict(media=2, frames=0), "frames 0"),
    (dict(media=2, frames=10**9), "max_frames"),
    (dict(fps_den=0), "fps_den 0"),
    (dict(fps_num=2**40), "fps_num"),
])
def test_reader_rejects_bad_header_field(kw, match):
    blob = raw_file(raw_body(**kw))
    assert_ncf_error(blob, match)
    with pytest.raises(NcfError, match=match):
        read_header(blob)


def test_header_unparsed_bytes_and_bad_length():
    assert_ncf_error(raw_file(raw_body() + b"\x00"), "unparsed")
    assert_ncf_error(raw_file(raw_body()[:-1]), "truncated")
    assert_ncf_error(raw_file(b""), "header length 0")
    assert_ncf_error(raw_file(b"\x01" * 4097), "header length 4097")
    huge = MAGIC + struct.pack("<H", 1) + uv(2**63) + b"\x00" * 8
    assert_ncf_error(huge, "header length")


def test_limits_are_honoured():
    blob = raw_file(raw_body(width=100, height=100, pad_width=100, pad_height=100))
    read_container(blob)
    assert_ncf_error(blob, "max_pixels", Limits(max_pixels=9999))
    assert_ncf_error(blob, "max_side", Limits(max_side=99))
    video = raw_file(raw_body(media=2, frames=50))
    assert_ncf_error(video, "max_frames", Limits(max_frames=49))
    assert_ncf_error(blob, "max_file_bytes", Limits(max_file_bytes=len(blob) - 1))
    three = raw_file(sections=[(b"a", b""), (b"b", b""), (b"c", b"xyz")])
    assert_ncf_error(three, "max_sections", Limits(max_sections=2))
    assert_ncf_error(three, "max_section_bytes", Limits(max_section_bytes=2))


def test_huge_declarations_refused_before_allocation():
    """Tiny files declaring enormous sizes fail fast with little memory."""
    cases = [
        raw_file(raw_body(width=2**62, height=2**62, pad_width=2**62, pad_height=2**62)),
        raw_file(count=2**63),
        raw_file(count=4096),
        raw_head(raw_body()) + uv(1) + lp(b"y") + uv(2**31 - 1) + b"\x00" * 8,
        raw_head(raw_body()) + uv(1) + lp(b"y") + uv(2**40) + b"\x00" * 8,
    ]
    tracemalloc.start()
    try:
        for blob in cases:
            assert_ncf_error(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_section_errors():
    head = raw_head(raw_body())
    e = assert_ncf_error(head + uv(1) + lp(b"y0") + uv(1048576) + b"\x00" * 316)
    assert "section 0 'y0': declared length 1048576" in str(e) and "exceeds remaining 312 bytes" in str(e)
    assert_ncf_error(head + uv(1) + raw_section(b"z", b"ab", crc=0), r"CRC mismatch in section 0 'z'")
    assert_ncf_error(head + uv(2) + raw_section(b"z", b"") + raw_section(b"z", b""), "duplicate section name 'z'")
    assert_ncf_error(head + uv(1) + raw_section(b"", b"abc"), "section 0 name length 0")
    assert_ncf_error(head + uv(1) + raw_section(b"x" * 33, b""), "section 0 name length 33")
    assert_ncf_error(head + uv(1) + raw_section(b"a b", b""), "printable ASCII")
    assert_ncf_error(head + uv(1) + raw_section(b"z", b"ab") + b"\x00", "trailing garbage")
    assert_ncf_error(head + uv(2) + raw_section(b"z", b"ab"), "truncated")
    assert_ncf_error(head + uv(5000), "max_sections")
    assert_ncf_error(head, "truncated: varint section count")
    # zero sections is a valid (if useless) file
    assert read_container(head + uv(0))[1] == []


def test_varints_must_be_minimal_and_64_bit():
    head = raw_head(raw_body())
    assert_ncf_error(head + b"\x80\x00", "not minimally encoded")
    assert_ncf_error(head + b"\xff" * 9 + b"\x02", "exceeds 64 bits")
    assert_ncf_error(head + b"\xff" * 12, "exceeds 64 bits")


def test_wrong_magic_and_version():
    good = small_file()
    assert_ncf_error(b"\x89PNG\r\n\x1a\n" + good[8:], "bad magic: not a neurocodec file")
    assert_ncf_error(b"", "truncated")
    assert_ncf_error(MAGIC[:5], "truncated")
    assert_ncf_error(b"GIF89a", "bad magic")
    assert_ncf_error(raw_file(version=7), "unsupported format version 7")
    assert_ncf_error(raw_file(version=0), "unsupported format version 0")
    with pytest.raises(NcfError, match="unsupported format version 2"):
        read_header(raw_file(version=2))


def test_non_bytes_input():
    for bad in ("NCF", None, 42, [1, 2, 3], 3.5):
        with pytest.raises(NcfError):
            read_container(bad)
        with pytest.raises(NcfError):
            read_header(bad)


def test_header_crc():
    blob = bytearray(small_file())
    blob[20] ^= 0x01  # inside the model name
    assert_ncf_error(bytes(blob), "header CRC mismatch")


# ----------------------------------------------------------------- hostile input

def test_truncation_at_every_offset():
    blob = small_file()
    header = read_header(blob)
    for n in range(len(blob)):
        with pytest.raises(NcfError):
            read_container(blob[:n])
    # read_header succeeds exactly from the end of the header CRC on
    ok = [n for n in range(len(blob) + 1) if _header_ok(blob[:n])]
    header_end = ok[0]
    assert ok == list(range(header_end, len(blob) + 1))
    assert read_header(blob[:header_end]) == header


def _header_ok(prefix: bytes) -> bool:
    try:
        read_header(prefix)
        return True
    except NcfError:
        return False


def test_every_single_bit_flip_is_detected():
    blob = small_file()
    for i in range(len(blob)):
        for bit in range(8):
            mutated = bytearray(blob)
            mutated[i] ^= 1 << bit
            with pytest.raises(NcfError):
                read_container(bytes(mutated))


@FAST
@given(st.binary(max_size=512))
def test_random_bytes(data):
    with pytest.raises(NcfError):
        read_container(data)
    parse_or_ncf_error(data)


@FAST
@given(st.binary(max_size=256))
def test_random_bytes_after_magic_and_version(tail):
    data = MAGIC + struct.pack("<H", FORMAT_VERSION) + tail
    with pytest.raises(NcfError):
        read_container(data)


@FAST
@given(headers(), section_lists(), st.data())
def test_mutations_only_raise_ncf_error(header, sections, data):
    blob = bytearray(write_container(header, sections))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "swap"]))
        if not blob:
            break
        i = data.draw(st.integers(0, len(blob) - 1))
        if op == "flip":
            blob[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            blob[i] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
        elif op == "insert":
            blob[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del blob[i:i + data.draw(st.integers(1, 8))]
        elif op == "truncate":
            del blob[i:]
        elif op == "swap":
            j = data.draw(st.integers(0, len(blob) - 1))
            blob[i], blob[j] = blob[j], blob[i]
    parse_or_ncf_error(bytes(blob))


@FAST
@given(headers(), st.data())
def test_header_fields_set_to_huge_values(header, data):
    """Re-encode a valid header with one varint field replaced by a huge value."""
    field = data.draw(st.sampled_from(["width", "height", "pad_width", "pad_height", "frames",
                                       "fps_num", "fps_den"]))
    value = data.draw(st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 2**31, 2**32, 2**64 - 1])))
    kw = dict(media=int(header.media), model=header.model.encode(), weights_hash=header.weights_hash,
              width=header.width, height=header.height, pad_width=header.pad_width,
              pad_height=header.pad_height, color=header.color.encode(), quality=header.quality,
              coder=sorted((k.encode(), v) for k, v in header.coder.items()),
              frames=header.frames, fps_num=header.fps_num, fps_den=header.fps_den,
              extra=sorted((k.encode(), v) for k, v in header.extra.items()))
    kw[field] = value
    blob = raw_file(raw_body(**kw))
    try:
        back, _ = read_container(blob)
    except NcfError:
        return
    validate_header(back)  # whatever parses is valid
    assert getattr(back, field) == value


@FAST
@given(section_lists(), st.data())
def test_sections_swapped_or_reordered(sections, data):
    """Whole section records moved around still parse (order is data), never crash."""
    header = make_header()
    perm = data.draw(st.permutations(sections))
    h, secs = read_container(write_container(header, perm))
    assert secs == list(perm)
