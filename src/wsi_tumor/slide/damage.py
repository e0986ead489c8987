"""Damaged tiles: found by looking at their bytes, since decoders do not say.

A JPEG tile whose bytes are damaged decodes without an exception in cuCIM and OpenSlide:
libjpeg prints ``ERROR ... while reading JPEG header`` or "Corrupt JPEG data" on stderr and
returns whatever pixels it managed, which the network would classify. So before a region is
used, the tiles it covers are checked once each, structurally, on their raw bytes:

- JPEG: starts with SOI (FFD8) and ends with EOI (FFD9); the header segments before SOS
  have lengths that fit; in the entropy-coded data every 0xFF is followed by a stuffed 0x00
  or a restart marker (FFD0-FFD7). Random damage nearly always breaks one of these;
- JPEG 2000 (Aperio 33003/33005): starts with SOC + SIZ (FF4F FF51), ends with EOC (FFD9);
- every compression: a tile with no bytes, or whose bytes lie outside the file, is missing.

A region with a damaged tile is left out of the map and recorded in the slide's report.
Checks cover the TIFF formats the pre-flight reads itself (generic TIFF, Aperio, OME-TIFF,
Philips); vendor formats read only through OpenSlide (NDPI, MRXS, ...) are not checked.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

_JPEG, _JPEG2000 = (7,), (33003, 33005, 34712)
_RESTART = frozenset(range(0xD0, 0xD8))


@dataclass(frozen=True)
class TileTable:
    """Where one level's tiles are in the file.

    Attributes:
        tile_width: Tile width in pixels.
        tile_height: Tile height.
        across: Tiles per row.
        down: Tile rows.
        compression: TIFF compression code.
        offsets: Byte offset of each tile (row-major).
        counts: Byte count of each tile.
    """

    tile_width: int
    tile_height: int
    across: int
    down: int
    compression: int
    offsets: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]

    @classmethod
    def of(cls, page: Any) -> TileTable | None:
        """The table of a tiled tifffile page (None for a stripped or planar page)."""
        if not page.is_tiled or int(page.planarconfig) != 1:
            return None
        tile_w, tile_h = int(page.tilewidth), int(page.tilelength)
        across = -(-int(page.imagewidth) // tile_w)
        down = -(-int(page.imagelength) // tile_h)
        offsets = np.asarray(page.dataoffsets, np.int64)
        counts = np.asarray(page.databytecounts, np.int64)
        if len(offsets) != across * down or len(counts) != len(offsets):
            return None
        return cls(tile_w, tile_h, across, down, int(page.compression), offsets, counts)

    def tiles(self, col: int, row: int, width: int, height: int) -> list[int]:
        """Indices of the tiles a level rectangle (clipped to the level) touches."""
        c0, r0 = max(col, 0) // self.tile_width, max(row, 0) // self.tile_height
        c1 = min((col + width - 1) // self.tile_width, self.across - 1)
        r1 = min((row + height - 1) // self.tile_height, self.down - 1)
        return [r * self.across + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]


def jpeg_problem(data: bytes) -> str | None:
    """Why ``data`` is not a structurally sound (possibly abbreviated) JPEG stream."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        return "no JPEG start marker"
    end = data.rstrip(b"\x00")  # some writers pad tiles with zeros
    if end[-2:] != b"\xff\xd9":
        return "no JPEG end marker (cut short)"
    pos = 2
    while True:
        if pos + 4 > len(end) or end[pos] != 0xFF:
            return f"broken JPEG header at byte {pos}"
        marker = end[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        length = int.from_bytes(end[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > len(end):
            return f"JPEG segment at byte {pos} runs past the tile"
        pos += 2 + length
        if marker == 0xDA:
            break
    scan = np.frombuffer(end, np.uint8)[pos:-2]
    following = scan[1:][scan[:-1] == 0xFF]
    bad = following[(following != 0) & ~np.isin(following, list(_RESTART))]
    if scan.size and scan[-1] == 0xFF:
        return "JPEG data ends inside a marker"
    if bad.size:
        return f"invalid marker 0xFF{int(bad[0]):02X} inside the JPEG data"
    return None


def jpeg2000_problem(data: bytes) -> str | None:
    """Why ``data`` is not a structurally sound JPEG 2000 codestream."""
    if data[:4] != b"\xff\x4f\xff\x51":
        return "no JPEG 2000 start (SOC + SIZ)"
    if data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return "no JPEG 2000 end marker (cut short)"
    return None


class DamageChecker:
    """Checks a slide's tiles once each and remembers what it found (thread-safe).

    Args:
        path: The TIFF file.
        tables: Per level, its tile table (None: that level is not checked).
    """

    def __init__(self, path: Path, tables: tuple[TileTable | None, ...]) -> None:
        self.path = path
        self.tables = tables
        self._size = os.path.getsize(path)
        self._checked: dict[tuple[int, int], str | None] = {}
        self._lock = threading.Lock()

    def problems(self, level: int, col: int, row: int, width: int, height: int) -> list[str]:
        """What is wrong with the tiles under a level rectangle (empty: nothing)."""
        table = self.tables[level] if level < len(self.tables) else None
        if table is None:
            return []
        found = []
        for index in table.tiles(col, row, width, height):
            key = (level, index)
            with self._lock:
                known = key in self._checked
                problem = self._checked.get(key)
            if not known:
                problem = self._check(table, index)
                with self._lock:
                    self._checked[key] = problem
            if problem is not None:
                tile_col, tile_row = index % table.across, index // table.across
                found.append(f"level {level} tile ({tile_col}, {tile_row}): {problem}")
        return found

    def _check(self, table: TileTable, index: int) -> str | None:
        offset, count = int(table.offsets[index]), int(table.counts[index])
        if count <= 0:
            return "missing (no bytes)"
        if offset < 0 or offset + count > self._size:
            return "bytes lie outside the file"
        with open(self.path, "rb") as handle:
            data = os.pread(handle.fileno(), count, offset)
        if table.compression in _JPEG:
            problem = jpeg_problem(data)
        elif table.compression in _JPEG2000:
            problem = jpeg2000_problem(data)
        else:
            problem = None
        if problem is not None:
            log.warning("%s: damaged tile %d: %s", self.path, index, problem)
        return problem
