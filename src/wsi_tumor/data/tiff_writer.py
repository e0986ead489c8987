"""Write pyramidal tiled TIFFs tile by tile, with bounded memory.

Layout (what CAMELYON16's generic-TIFF slides look like, and what cuCIM, OpenSlide and
tiffslide all open): one tiled page per level, level 0 first, the reduced levels marked
``NewSubfileType = 1``; each level is half the previous one (``ceil``), 2 x 2 box-filtered
(or rendered directly by the caller, as masks are); resolution tags in pixels per
centimetre (``ResolutionUnit = CENTIMETER``, ``XResolution = 10**4 / mpp``), from which
OpenSlide's ``openslide.mpp-x`` and cuCIM's ``spacing()`` read back the microns per pixel.

Level 0 is rendered and written one strip of tiles at a time; the next level is built from
those strips into a small temporary raw file (plain reads and writes, no memory map), so
resident memory stays at a few strips whatever the slide size.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import tifffile

from wsi_tumor.fileio import atomic_path

log = logging.getLogger(__name__)

TILE = 256
"""Tile side in pixels (every level)."""
MIN_SIZE = 512
"""Levels are added until the long side is at most this many pixels."""
JPEG_QUALITY = 90
MASK_COMPRESSION = "lzw"
"""Lossless mask compression: LZW, which cuCIM, OpenSlide and tiffslide all decode
(cuCIM's TIFF loader has no deflate)."""
SOFTWARE = "wsi-tumor"

Array = npt.NDArray[np.uint8]
RenderStrip = Callable[[int, int], Array]
"""(row0, rows) -> level-0 strip of shape (rows, width[, channels])."""
RenderLevel = Callable[[int, int, int], Array]
"""(level, row0, rows) -> strip of that level, shape (rows, level_width[, channels])."""


@dataclass(frozen=True)
class PyramidSpec:
    """What :func:`write_pyramid` writes.

    Attributes:
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        channels: 3 for RGB (JPEG tiles), 1 for a mask (lossless tiles).
        mpp: Level-0 microns per pixel (both axes).
        min_levels: Write at least this many levels (e.g. 6 so a mask has level 5).
        min_size: Keep halving until the long side is at most this.
        tile: Tile side.
    """

    width: int
    height: int
    channels: Literal[1, 3]
    mpp: float
    min_levels: int = 1
    min_size: int = MIN_SIZE
    tile: int = TILE

    def level_dimensions(self) -> list[tuple[int, int]]:
        """(w, h) of every level, level 0 first."""
        return pyramid_dimensions(self.width, self.height, self.min_size, self.min_levels)


def pyramid_dimensions(
    width: int, height: int, min_size: int = MIN_SIZE, min_levels: int = 1
) -> list[tuple[int, int]]:
    """(w, h) per level: halve (rounding up) until the long side <= min_size and enough levels.

    Args:
        width: Level-0 width.
        height: Level-0 height.
        min_size: Stop once the long side is at most this.
        min_levels: But write at least this many levels.

    Returns:
        Level dimensions, level 0 first.
    """
    dims = [(width, height)]
    while (max(dims[-1]) > min_size or len(dims) < min_levels) and max(dims[-1]) > 1:
        w, h = dims[-1]
        dims.append((math.ceil(w / 2), math.ceil(h / 2)))
    return dims


def downsample2(strip: Array) -> Array:
    """2 x 2 box filter of a (rows, cols[, C]) uint8 strip; odd edges are replicated.

    Rounds half up, so constant regions keep their value exactly.
    """
    rows, cols = strip.shape[:2]
    if rows % 2 or cols % 2:
        pad = [(0, rows % 2), (0, cols % 2)] + [(0, 0)] * (strip.ndim - 2)
        strip = np.pad(strip, pad, mode="edge")
    wide = strip.astype(np.uint16)
    total = wide[0::2, 0::2] + wide[1::2, 0::2] + wide[0::2, 1::2] + wide[1::2, 1::2]
    return ((total + 2) >> 2).astype(np.uint8)


class _RawLevel:
    """A level kept on disk as raw rows: written strip by strip, read back strip by strip."""

    def __init__(self, directory: Path, level: int, width: int, height: int, channels: int):
        self.width, self.height, self.channels = width, height, channels
        self.row_bytes = width * channels
        self.path = directory / f"level{level}.raw"
        self._file = self.path.open("w+b")

    def write(self, row0: int, rows: Array) -> None:
        self._file.seek(row0 * self.row_bytes)
        self._file.write(np.ascontiguousarray(rows).tobytes())

    def read(self, row0: int, count: int) -> Array:
        count = min(count, self.height - row0)
        self._file.seek(row0 * self.row_bytes)
        data = np.frombuffer(self._file.read(count * self.row_bytes), dtype=np.uint8)
        shape = (count, self.width, self.channels) if self.channels > 1 else (count, self.width)
        return data.reshape(shape)

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def _tiles(strip: Array, tile: int) -> Iterator[Array]:
    """Cut a strip (rows <= tile) into full-size tiles, replicating edge pixels as padding."""
    rows, cols = strip.shape[:2]
    if rows < tile or cols % tile:
        pad = [(0, tile - rows), (0, -cols % tile)] + [(0, 0)] * (strip.ndim - 2)
        strip = np.pad(strip, pad, mode="edge")
    for c in range(0, strip.shape[1], tile):
        yield strip[:, c : c + tile]


class _Pyramid:
    """Writes the levels of one file in order, keeping at most one strip per level in RAM."""

    def __init__(
        self,
        spec: PyramidSpec,
        render: RenderStrip,
        render_level: RenderLevel | None,
        progress: Callable[[int], object] | None,
        workdir: Path,
    ) -> None:
        self.spec, self.render, self.render_level = spec, render, render_level
        self.progress = progress
        self.workdir = workdir
        self.dims = spec.level_dimensions()

    def _strips(
        self, level: int, source: _RawLevel | None, sink: _RawLevel | None
    ) -> Iterator[Array]:
        width, height = self.dims[level]
        tile = self.spec.tile
        for row0 in range(0, height, tile):
            rows = min(tile, height - row0)
            if level == 0:
                strip = self.render(row0, rows)
            elif self.render_level is not None:
                strip = self.render_level(level, row0, rows)
            else:
                assert source is not None
                strip = source.read(row0, rows)
            expected = (rows, width) if self.spec.channels == 1 else (rows, width, 3)
            if strip.shape != expected or strip.dtype != np.uint8:
                raise ValueError(
                    f"level {level} strip at row {row0}: got {strip.shape} {strip.dtype}, "
                    f"expected {expected} uint8"
                )
            if sink is not None:
                sink.write(row0 // 2, downsample2(strip))
            if level == 0 and self.progress is not None:
                self.progress(rows)
            yield strip

    def tiles(
        self, level: int, source: _RawLevel | None, sink: _RawLevel | None
    ) -> Iterator[Array]:
        for strip in self._strips(level, source, sink):
            yield from _tiles(strip, self.spec.tile)

    def write(self, writer: tifffile.TiffWriter) -> None:
        spec = self.spec
        ppcm = 1e4 / spec.mpp
        if spec.channels == 3:
            options: dict[str, Any] = {
                "photometric": "rgb",
                "compression": "jpeg",
                "compressionargs": {"level": JPEG_QUALITY},
            }
        else:
            options = {"photometric": "minisblack", "compression": MASK_COMPRESSION}
        source: _RawLevel | None = None
        try:
            for level, (width, height) in enumerate(self.dims):
                sink = None
                if self.render_level is None and level + 1 < len(self.dims):
                    nw, nh = self.dims[level + 1]
                    sink = _RawLevel(self.workdir, level + 1, nw, nh, spec.channels)
                shape = (height, width) if spec.channels == 1 else (height, width, 3)
                writer.write(
                    self.tiles(level, source, sink),
                    shape=shape,
                    dtype=np.uint8,
                    tile=(spec.tile, spec.tile),
                    resolution=(ppcm / 2**level, ppcm / 2**level),
                    resolutionunit="CENTIMETER",
                    subfiletype=1 if level else 0,
                    software=SOFTWARE,
                    metadata=None,
                    maxworkers=1,  # threaded encoding buffers ~0.5 GB of tiles
                    **options,
                )
                if source is not None:
                    source.close()
                source = sink
        finally:
            if source is not None:
                source.close()


def write_pyramid(
    path: str | Path,
    spec: PyramidSpec,
    render: RenderStrip,
    *,
    render_level: RenderLevel | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[tuple[int, int]]:
    """Write a pyramidal tiled TIFF whose level 0 comes from ``render`` strip by strip.

    The file is written under a temporary name in the same directory and renamed when
    complete. Output bytes depend only on the arguments (no timestamps).

    Args:
        path: Destination ``.tif``.
        spec: Size, channels, resolution and level rules.
        render: ``render(row0, rows)`` returns level-0 rows ``row0 .. row0 + rows - 1``
            as (rows, width, 3) (RGB) or (rows, width) (mask) uint8. Called once per strip
            of ``spec.tile`` rows, top to bottom.
        render_level: If given, levels >= 1 are rendered by ``render_level(level, row0,
            rows)`` instead of box-filtering the level above (masks rasterise every level
            from their polygons this way).
        progress: Called with the number of level-0 rows just finished.

    Returns:
        (w, h) of the levels written.
    """
    path = Path(path)
    pyramid = _Pyramid(spec, render, render_level, progress, path.parent)
    with (
        tempfile.TemporaryDirectory(dir=path.parent, prefix=".pyramid-") as workdir,
        atomic_path(path) as tmp,
    ):
        pyramid.workdir = Path(workdir)
        # compressed tiles are smaller than raw pixels: classic TIFF is safe below 4 GiB raw
        bigtiff = spec.width * spec.height * spec.channels * 4 // 3 >= 2**32
        with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as writer:
            pyramid.write(writer)
    log.debug("wrote %s: levels %s", path, pyramid.dims)
    return pyramid.dims
