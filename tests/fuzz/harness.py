"""Decoder fuzzing, shared by tests/test_fuzz.py (hypothesis, in CI) and fuzz_decoders.py (atheris).

`decode(data)` does what `neurocodec decode` does. Its only acceptable outcomes are a decoded
array of the declared shape, `NcfError` (malformed or corrupt file) or `NeurocodecError` (a
valid file that is refused), within `SECONDS` per input.

`mutate(file, pick)` damages a valid file. Raw damage (bit flips, truncation, inserted or
deleted bytes) mostly stops at the CRCs, so most mutations are structural: section payloads,
section order and header fields are changed and the file is re-framed with correct CRCs,
which carries the damage into the pipelines and the entropy decoder. `pick(n)` returns an
int in [0, n): hypothesis draws it, atheris consumes it from its input.
"""
from __future__ import annotations

import dataclasses
import struct
import time

import numpy as np

from codec.container import Limits, MediaKind, NcfError, pack_streams, read_container, read_header, unpack_streams
from codec.container.format import encode_header_body, encode_section, frame_header
from codec.container.wire import encode_uvarint
from codec.errors import NeurocodecError
from codec.image import decode_image
from codec.video import decode_video

LIMITS = Limits(max_pixels=1 << 18, max_frames=64)  # what a fuzzed header may declare (bounds time)
SECONDS = 30.0  # per input, generous for a loaded 2-core CI machine
INTERESTING = [0, 1, 2, 3, 7, 63, 64, 65, 127, 128, 255, 256, 1023, 1024, 2049, 4096, 65535, 65536,
               2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
HEADER_INTS = ["width", "height", "pad_width", "pad_height", "frames", "fps_num", "fps_den"]


def decode(data: bytes) -> str:
    """Decode like the CLI; return the outcome's name, raise AssertionError on a contract breach."""
    t0 = time.perf_counter()
    try:
        header = read_header(data, LIMITS)
        if header.media == MediaKind.IMAGE:
            out = decode_image(data, LIMITS)
            assert out.shape == (header.height, header.width, 3) and out.dtype == np.uint8
        else:
            out = decode_video(data, LIMITS)
            assert out.shape == (header.frames, header.height, header.width, 3) and out.dtype == np.uint8
        outcome = "decoded"
    except (NcfError, NeurocodecError) as e:
        outcome = type(e).__name__
    seconds = time.perf_counter() - t0
    assert seconds < SECONDS, f"decoding took {seconds:.1f} s"
    return outcome


def _raw(blob: bytearray, pick) -> bytes:
    i = pick(len(blob))
    op = pick(5)
    if op == 0:
        blob[i] ^= 1 << pick(8)
    elif op == 1:
        del blob[i:]
    elif op == 2:
        blob[i:i] = bytes(pick(256) for _ in range(1 + pick(8)))
    elif op == 3:
        del blob[i:i + 1 + pick(16)]
    else:
        blob[i] = [0x00, 0x7F, 0x80, 0xFF][pick(4)]
    return bytes(blob)


def _payload(data: bytes, pick) -> bytes:
    b = bytearray(data)
    op = pick(6)
    if op == 0 and b:
        b[pick(len(b))] ^= 1 << pick(8)
    elif op == 1:
        del b[pick(len(b) + 1):]
    elif op == 2:
        b[pick(len(b) + 1):pick(len(b) + 1)] = bytes(pick(256) for _ in range(1 + pick(8)))
    elif op == 3 and b:
        i = pick(len(b))
        del b[i:i + 1 + pick(64)]
    elif op == 4:
        b = bytearray(pick(256) for _ in range(pick(64)))
    elif b:
        b[pick(len(b))] = [0x00, 0x7F, 0x80, 0xFF][pick(4)]
    return bytes(b)


def _packed(data: bytes, count: int, pick) -> bytes:
    """Damage inside an image's packed section, repacked: one stream's payload, two streams
    swapped, one dropped or duplicated (the parts of one rANS chain, docs/format.md)."""
    try:
        streams = unpack_streams(data, count, "fuzz")
    except NcfError:
        return _payload(data, pick)
    i, j = pick(len(streams)), pick(len(streams))
    op = pick(4)
    if op == 0:
        streams[i] = _payload(streams[i], pick)
    elif op == 1:
        streams[i], streams[j] = streams[j], streams[i]
    elif op == 2:
        del streams[i]
    else:
        streams.insert(j, streams[i])
    return pack_streams(streams)


def _header(h, pick):
    field = pick(len(HEADER_INTS) + 5)
    if field < len(HEADER_INTS):
        return dataclasses.replace(h, **{HEADER_INTS[field]: INTERESTING[pick(len(INTERESTING))]})
    field -= len(HEADER_INTS)
    if field == 0:
        return dataclasses.replace(h, quality=[0.0, -1.0, 1.0, 4.5, 8.0, 8.5, 1e30, float("nan")][pick(8)])
    if field == 1 and h.coder:
        key = sorted(h.coder)[pick(len(h.coder))]
        return dataclasses.replace(h, coder={**h.coder, key: INTERESTING[pick(len(INTERESTING))]})
    if field == 2:
        key = ["tile", "y_streams", "group", "groups", "family"][pick(5)]
        value = INTERESTING[pick(len(INTERESTING))] * (1 if pick(2) else -1) // 2
        if key in ("group", "groups"):
            return dataclasses.replace(h, extra={**h.extra, key: value})
        return dataclasses.replace(h, coder={**h.coder, key: abs(value)})
    if field == 3:
        return dataclasses.replace(h, media=3 - int(h.media))
    return dataclasses.replace(h, weights_hash=bytes(8))


def _frame(header, sections) -> bytes:
    """A file with correct CRCs around whatever the header says (no validation)."""
    return frame_header(encode_header_body(header)) + encode_uvarint(len(sections)) + b"".join(
        encode_section(name.encode(), data) for name, data in sections)


def mutate(valid: bytes, pick) -> bytes:
    """1 to 3 mutations of a valid file: raw bytes (1 in 4) or structural, re-framed."""
    if pick(4) == 0:
        return _raw(bytearray(valid), pick)
    header, secs = read_container(valid)
    sections = [(s.name, s.data) for s in secs]
    for _ in range(1 + pick(3)):
        op = pick(6)
        i, j = pick(len(sections)), pick(len(sections))
        packed = header.media == MediaKind.IMAGE and sections[i][0].endswith("streams")
        if op <= 1 and packed:
            count = 1 + header.coder.get("y_streams", 0)
            sections[i] = (sections[i][0], _packed(sections[i][1], count, pick) if pick(2) else
                           _payload(sections[i][1], pick))
        elif op <= 1:
            sections[i] = (sections[i][0], _payload(sections[i][1], pick))
        elif op == 2:  # sections' contents swapped
            sections[i], sections[j] = (sections[i][0], sections[j][1]), (sections[j][0], sections[i][1])
        elif op == 3:  # a section dropped, or moved
            moved = sections.pop(i)
            if pick(2):
                sections.insert(j % (len(sections) + 1), moved)
        elif op == 4:
            header = _header(header, pick)
        else:  # a section renamed (a duplicate name is a container error)
            sections[i] = ([s[0] for s in sections][j] if pick(2) else f"t{pick(3)}/" + sections[i][0],
                           sections[i][1])
        if not sections:
            break
    try:
        return _frame(header, sections)
    except (ValueError, OverflowError, struct.error):  # a value the wire format cannot hold
        return valid


def reframe(header, sections) -> bytes:
    """`header` and `sections` (Section objects) as a file with correct CRCs, unvalidated."""
    return _frame(header, [(s.name, s.data) for s in sections])


def seed_files(folder) -> dict[str, bytes]:
    """Small valid files to mutate: an image, a tiled image (6 tiles) and a 6-frame video."""
    from pathlib import Path

    from codec import video
    from codec.image import encode_image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (70, 150, 3), dtype=np.uint8)
    clip = Path(folder) / "clip.y4m"
    video.write_frames(rng.integers(0, 256, (6, 24, 40, 3), dtype=np.uint8), clip, fps=25)
    return {"image": encode_image(img, quality=3), "tiled": encode_image(img, quality=3, tile=64),
            "video": video.encode_video(clip, epochs=2, group=4, progress=False, quality=3.0)}
