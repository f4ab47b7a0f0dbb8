"""Tiles of the image pipeline: an image with a side above `TILE` is coded as independent
TILE x TILE tiles (bounded memory: a 1024x1024 tile needs about 0.6 GB of activations), in
raster order, each tile's sections prefixed "t<i>/". Also how a tile's streams are stored:
one packed section since coder version 3, one section per stream before."""
from __future__ import annotations

from codec.container import NcfError, Section, pack_streams, unpack_streams
from codec.errors import NeurocodecError

TILE = 1024    # images with a side above this are coded in tiles of this side (memory bound)
MAX_TILE = 2048  # largest tile side (and untiled image area, MAX_TILE^2) a decoder accepts
# Since version 3 a tile's streams share one section and are the parts of one rANS chain:
# one name, length, CRC and 8-byte coder state per stream less (docs/format.md).
PACKED_SINCE = 3


def tile_grid(h: int, w: int, tile: int | None) -> list[tuple[slice, slice]]:
    """(rows, columns) of each tile in raster order; the whole image when `tile` is None."""
    if tile is None:
        return [(slice(0, h), slice(0, w))]
    return [(slice(y, min(y + tile, h)), slice(x, min(x + tile, w)))
            for y in range(0, h, tile) for x in range(0, w, tile)]


def tile_prefix(tile: int | None, i: int) -> str:
    return "" if tile is None else f"t{i}/"


def tile_sections(streams: list[tuple[str, bytes]], prefix: str, version: int) -> list[Section]:
    """A tile's (name, bytes) streams as the sections of a file of this coder version."""
    if version >= PACKED_SINCE:
        return [Section(prefix + "streams", pack_streams([data for _, data in streams]))]
    return [Section(prefix + name, data) for name, data in streams]


def tile_side(net, h: int, w: int, tile: int) -> int | None:
    """The tile side to code an h x w image with (None: one tile), checked."""
    if tile % net.stride or not net.stride <= tile <= MAX_TILE:
        raise NeurocodecError(f"tile must be a multiple of {net.stride} in [{net.stride}, {MAX_TILE}], got {tile}")
    return tile if max(h, w) > tile else None


class TileStreams:
    """One tile's streams for the decoder, taken by name in coding order: from the sections of
    those names (coder versions 1 and 2) or, in order, from the tile's packed section."""

    def __init__(self, sections: dict, prefix: str, count: int, packed: bool, model: str):
        self.sections, self.prefix, self.model, self.packed = sections, prefix, model, None
        if packed:
            name = prefix + "streams"
            if name not in sections:
                raise NcfError(f"file lacks the section {name!r}")
            self.packed = unpack_streams(sections.pop(name), count, f"section {name!r}")[::-1]

    def take(self, name: str) -> bytes:
        if self.packed is None:
            if self.prefix + name not in self.sections:
                raise NcfError(f"file lacks the stream {self.prefix + name!r} that model {self.model!r} needs")
            return self.sections.pop(self.prefix + name)
        if not self.packed:
            raise NcfError(f"section {self.prefix + 'streams'!r} holds fewer streams than model {self.model!r} needs")
        return self.packed.pop()

    def check_all_taken(self) -> None:
        if self.packed:
            raise NcfError(f"section {self.prefix + 'streams'!r} holds {len(self.packed)} more streams than "
                           f"model {self.model!r} uses")
