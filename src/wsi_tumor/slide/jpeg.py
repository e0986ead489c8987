"""JPEG tile streams as tiled TIFFs store them, made whole for a plain JPEG decoder.

A TIFF page with ``JPEGTables`` (libtiff's layout, CAMELYON16's slides) stores abbreviated
tiles without quantisation or Huffman tables and one tables-only stream for all of them:
:func:`merge_jpeg_tables` puts the tables back into each tile. A page tagged
Photometric=RGB whose streams carry no JFIF or Adobe marker (Aperio's RGB tiles) holds RGB
samples that a JPEG decoder would take for YCbCr (libjpeg's guess for three components):
:func:`mark_rgb` adds an Adobe marker with transform 0, the standard way of saying "RGB, no
colour transform". No torch here: :mod:`wsi_tumor.slide.torchvision_reader` decodes.
"""

from __future__ import annotations

from typing import Final

from wsi_tumor.errors import SlideFormatError

SOI: Final = b"\xff\xd8"
EOI: Final = b"\xff\xd9"
TABLE_MARKERS: Final = (0xDB, 0xC4)
"""DQT and DHT: the segments a TIFF's JPEGTables tag holds for every tile."""
ADOBE_RGB: Final = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
"""APP14 "Adobe" segment, version 100, transform 0: the components are RGB."""


def jpeg_segments(stream: bytes) -> list[tuple[int, bytes]]:
    """Split a JPEG stream after its SOI into (marker, segment bytes); SOS holds the rest.

    Raises:
        SlideFormatError: when the stream does not start with SOI or a marker is missing.
    """
    if not stream.startswith(SOI):
        raise SlideFormatError("JPEG stream does not start with SOI (FF D8)")
    segments: list[tuple[int, bytes]] = []
    i = 2
    while i < len(stream):
        if stream[i] != 0xFF or i + 1 >= len(stream):
            raise SlideFormatError(f"JPEG stream has no marker at byte {i}")
        marker = stream[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0xD9:
            segments.append((marker, stream[i : i + 2]))
            break
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:
            segments.append((marker, stream[i : i + 2]))
            i += 2
        elif marker == 0xDA:
            segments.append((marker, stream[i:]))
            break
        else:
            length = int.from_bytes(stream[i + 2 : i + 4], "big")
            segments.append((marker, stream[i : i + 2 + length]))
            i += 2 + length
    return segments


def merge_jpeg_tables(tile: bytes, tables: bytes | None) -> bytes:
    """A self-contained JPEG stream: the JPEGTables' segments inserted after the tile's SOI.

    Tables a tile defines again itself override the shared ones, as JPEG allows, so this is
    safe on every tile of a page with JPEGTables.

    Raises:
        SlideFormatError: when either stream does not start with SOI.
    """
    if not tables:
        return tile
    if not tile.startswith(SOI) or not tables.startswith(SOI):
        raise SlideFormatError("JPEG tile or JPEGTables does not start with SOI (FF D8)")
    body = tables[2:-2] if tables.endswith(EOI) else tables[2:]
    return SOI + body + tile[2:]


def mark_rgb(stream: bytes) -> bytes:
    """``stream`` with an Adobe APP14 marker (transform 0) after SOI: decode as RGB."""
    return SOI + ADOBE_RGB + stream[2:]
