"""JPEG streams and JPEG-tiled TIFF files, as libtiff writes CAMELYON slides.

A tiled TIFF page with ``JPEGTables`` stores abbreviated JPEG tiles (no quantisation or
Huffman tables of their own) and one tables-only stream for all of them; a decoder needs the
two merged. This module splits and merges those streams, writes such a page (tifffile needs
imagecodecs to write JPEG, which the GPU image lacks) and reads a page's raw tiles back.
No torch: the codecs live in :mod:`wsi_bench.gpu_probe.decode`.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tifffile

from wsi_bench.gpu_probe import ProbeError
from wsi_tumor import contract

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_TABLE_MARKERS = (0xDB, 0xC4)
"""DQT and DHT: the segments a TIFF's JPEGTables tag holds for every tile."""


def jpeg_segments(stream: bytes) -> list[tuple[int, bytes]]:
    """Split a JPEG stream after its SOI into (marker, segment bytes); SOS holds the rest.

    Raises:
        ProbeError: when the stream does not start with SOI or a marker is missing.
    """
    if not stream.startswith(_SOI):
        raise ProbeError("JPEG stream does not start with SOI (FF D8)")
    segments: list[tuple[int, bytes]] = []
    i = 2
    while i < len(stream):
        if stream[i] != 0xFF:
            raise ProbeError(f"JPEG stream has no marker at byte {i}")
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


def split_jpeg_tables(stream: bytes) -> tuple[bytes, bytes]:
    """(tables, abbreviated stream): DQT/DHT moved to a tables-only stream, as libtiff writes."""
    segments = jpeg_segments(stream)
    tables = _SOI + b"".join(s for m, s in segments if m in _TABLE_MARKERS) + _EOI
    abbreviated = _SOI + b"".join(s for m, s in segments if m not in _TABLE_MARKERS)
    return tables, abbreviated


def merge_jpeg_tables(tile: bytes, tables: bytes | None) -> bytes:
    """A self-contained JPEG stream: the JPEGTables' segments inserted after the tile's SOI.

    Tables defined again inside the tile (a self-contained tile) override the shared ones, as
    JPEG allows, so this is safe on every tile of a TIFF with JPEGTables.

    Raises:
        ProbeError: when either stream does not start with SOI.
    """
    if not tables:
        return tile
    if not tile.startswith(_SOI) or not tables.startswith(_SOI):
        raise ProbeError("JPEG tile or JPEGTables does not start with SOI (FF D8)")
    body = tables[2:-2] if tables.endswith(_EOI) else tables[2:]
    return _SOI + body + tile[2:]


def jpeg_subsampling(stream: bytes) -> tuple[int, int]:
    """(horizontal, vertical) sampling factors of the first component in the SOF segment."""
    for marker, segment in jpeg_segments(stream):
        if marker in (0xC0, 0xC1, 0xC2):
            factors = segment[11]  # FF Cn, length(2), P, Y(2), X(2), Nf, C1 id, C1 H<<4|V
            return factors >> 4, factors & 0x0F
    raise ProbeError("JPEG stream has no SOF0/1/2 segment")


def _tiff_entry(tag: int, kind: int, values: Sequence[int] | bytes) -> tuple[int, int, int, bytes]:
    """(tag, type, count, payload) of one classic-TIFF IFD entry (little-endian)."""
    if kind == 7 or kind == 2:  # UNDEFINED, ASCII
        payload = bytes(values)
        return tag, kind, len(payload), payload
    fmt = {3: "H", 4: "I", 5: "I"}[kind]
    payload = struct.pack(f"<{len(values)}{fmt}", *values)
    count = len(values) // 2 if kind == 5 else len(values)
    return tag, kind, count, payload


def write_jpeg_tiff(
    path: Path,
    width: int,
    height: int,
    tile: int,
    tiles: Sequence[bytes],
    tables: bytes | None,
    subsampling: tuple[int, int],
    mpp: float = contract.DEFAULT_MPP,
) -> None:
    """Write one tiled JPEG page (YCbCr, tiles row-major) with an optional JPEGTables tag.

    tifffile needs imagecodecs to write JPEG, which the GPU image lacks, so the probe writes
    the few tags itself; tifffile (with imagecodecs), libtiff-based readers and the probe read
    the result (tests/test_gpu_probe.py checks tifffile's pixels against the probe's).
    """
    header = struct.pack("<2sHI", b"II", 42, 0)  # IFD offset patched below
    offsets, counts = [], []
    position = len(header)
    for data in tiles:
        offsets.append(position)
        counts.append(len(data))
        position += len(data)
    per_cm = round(1e4 / mpp * 1000)
    entries = [
        _tiff_entry(256, 4, [width]),
        _tiff_entry(257, 4, [height]),
        _tiff_entry(258, 3, [8, 8, 8]),
        _tiff_entry(259, 3, [7]),  # JPEG
        _tiff_entry(262, 3, [6]),  # YCbCr
        _tiff_entry(277, 3, [3]),
        _tiff_entry(282, 5, [per_cm, 1000]),
        _tiff_entry(283, 5, [per_cm, 1000]),
        _tiff_entry(284, 3, [1]),
        _tiff_entry(296, 3, [3]),  # centimetre
        _tiff_entry(305, 2, b"wsi-tumor gpu_probe\0"),
        _tiff_entry(322, 4, [tile]),
        _tiff_entry(323, 4, [tile]),
        _tiff_entry(324, 4, offsets),
        _tiff_entry(325, 4, counts),
    ]
    if tables:
        entries.append(_tiff_entry(347, 7, tables))
    entries.append(_tiff_entry(530, 3, list(subsampling)))
    entries.append(_tiff_entry(532, 5, [0, 1, 255, 1, 128, 1, 255, 1, 128, 1, 255, 1]))
    # out-of-line payloads after the tiles, then the IFD (word aligned)
    blobs, values = bytearray(), []
    for _tag, _kind, _count, payload in entries:
        if len(payload) <= 4:
            values.append(payload.ljust(4, b"\0"))
        else:
            values.append(struct.pack("<I", position + len(blobs)))
            blobs += payload + (b"\0" if len(payload) % 2 else b"")
    ifd_offset = position + len(blobs)
    ifd = bytearray(struct.pack("<H", len(entries)))
    for (tag, kind, count, _payload), value in zip(entries, values, strict=True):
        ifd += struct.pack("<HHI", tag, kind, count) + value
    ifd += struct.pack("<I", 0)
    if ifd_offset >= 2**32:
        raise ProbeError(f"{path}: over 4 GiB, too large for a classic TIFF")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<2sHI", b"II", 42, ifd_offset))
        for data in tiles:
            fh.write(data)
        fh.write(bytes(blobs))
        fh.write(bytes(ifd))
    os.replace(tmp, path)


@dataclass
class TileSet:
    """Raw JPEG tiles of one page block, as stored in the file.

    Attributes:
        path: The TIFF.
        tile: (width, height) of a tile.
        grid: (columns, rows) of the block.
        tiles: Raw tile bytes, row-major over the block.
        tables: The page's JPEGTables, or None (self-contained tiles).
        photometric: The page's PhotometricInterpretation.
        page_size: (width, height) of the page.
    """

    path: Path
    tile: tuple[int, int]
    grid: tuple[int, int]
    tiles: list[bytes]
    tables: bytes | None
    photometric: int
    page_size: tuple[int, int]

    @property
    def megapixels(self) -> float:
        """Decoded megapixels of the whole block."""
        return len(self.tiles) * self.tile[0] * self.tile[1] / 1e6


def read_jpeg_tiles(path: Path, max_side_px: int) -> TileSet:
    """Raw tiles of a centred block (at most ``max_side_px`` a side) of the TIFF's first page.

    Raises:
        ProbeError: when the page is not tiled 8-bit RGB JPEG.
    """
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # any unreadable file is the same usage error
        raise ProbeError(f"{path}: not a readable TIFF: {exc}") from exc
    with tif:
        page = tif.pages[0]
        if not isinstance(page, tifffile.TiffPage):
            raise ProbeError(f"{path}: page 0 could not be read as a TIFF page")
        compression = int(page.compression)
        if compression != 7:
            raise ProbeError(f"{path}: page 0 is not JPEG-compressed (compression {compression})")
        if not page.is_tiled or int(page.samplesperpixel) != 3:
            raise ProbeError(f"{path}: page 0 must be tiled RGB (3 samples per pixel)")
        width, height = int(page.imagewidth), int(page.imagelength)
        tw, th = int(page.tilewidth), int(page.tilelength)
        tables = getattr(page, "jpegtables", None)
        tag = page.tags.get(347)
        if tables is None and tag is not None:
            tables = tag.value
        offsets, counts = list(page.dataoffsets), list(page.databytecounts)
        photometric = int(page.photometric)
    across, down = math.ceil(width / tw), math.ceil(height / th)
    cols = max(1, min(width // tw, max_side_px // tw))
    rows = max(1, min(height // th, max_side_px // th))
    col0, row0 = (width // tw - cols) // 2, (height // th - rows) // 2
    tiles = []
    with open(path, "rb") as fh:
        for row in range(row0, row0 + rows):
            for col in range(col0, col0 + cols):
                index = row * across + col
                if index >= len(offsets) or row >= down:
                    raise ProbeError(f"{path}: tile {index} is missing from TileOffsets")
                fh.seek(offsets[index])
                tiles.append(fh.read(counts[index]))
    return TileSet(
        path,
        (tw, th),
        (cols, rows),
        tiles,
        bytes(tables) if tables else None,
        photometric,
        (width, height),
    )
