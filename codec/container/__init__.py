"""The .ncf container: bytes in, bytes out; no tensors.

A file is magic bytes, a format version, a CRC-protected header (media kind,
model preset, weights hash prefix, sizes, colour format, quality, coder
settings, video timing, extra ints) and a list of named, length-prefixed,
CRC32-protected sections.  The byte layout is specified in docs/format.md.

Readers validate every length and size against :class:`Limits` before
allocating and raise :class:`NcfError` (a ValueError) and nothing else.
"""
from .errors import NcfError
from .format import (FORMAT_VERSION, MAGIC, MAX_HEADER_BYTES, MAX_HEADER_PREFIX, get_section,
                     pack_streams, read_container, read_header, sections_by_name, unpack_streams,
                     write_container)
from .schema import (DEFAULT_LIMITS, MAX_CODER_ENTRIES, MAX_COLOR_BYTES, MAX_EXTRA_ENTRIES,
                     MAX_KEY_BYTES, MAX_MODEL_BYTES, MAX_PADDING, MAX_SECTION_NAME_BYTES,
                     WEIGHTS_HASH_BYTES, Header, Limits, MediaKind, Section, validate_header)
from .wire import Cursor, encode_svarint, encode_uvarint, zigzag_decode, zigzag_encode

__all__ = [
    "NcfError", "Header", "Section", "Limits", "DEFAULT_LIMITS", "MAGIC", "FORMAT_VERSION",
    "MediaKind", "write_container", "read_container", "read_header", "sections_by_name",
    "get_section", "pack_streams", "unpack_streams", "validate_header", "MAX_HEADER_BYTES", "MAX_HEADER_PREFIX",
    "MAX_MODEL_BYTES", "MAX_COLOR_BYTES", "MAX_KEY_BYTES", "MAX_SECTION_NAME_BYTES",
    "MAX_CODER_ENTRIES", "MAX_EXTRA_ENTRIES", "MAX_PADDING", "WEIGHTS_HASH_BYTES",
    "Cursor", "encode_uvarint", "encode_svarint", "zigzag_encode", "zigzag_decode",
]
