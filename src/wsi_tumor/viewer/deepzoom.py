"""Deep Zoom tiles of a slide, cut on demand from the product's own readers.

The arithmetic is openslide-python's ``DeepZoomGenerator`` (``limit_bounds=False``), the
well-kept reference, applied to a :class:`~wsi_tumor.slide.base.SlideReader` instead of an
OpenSlide handle (tested tile by tile against it). Four coordinate planes:

- tile: (column, row) of a tile within a Deep Zoom level (``t``);
- Deep Zoom level pixels (``z``): level ``L`` of ``N`` is level 0 halved ``N - 1 - L`` times
  (rounding up), down to one pixel;
- slide level pixels (``l``): the pyramid level read for it, the finest level whose
  downsample does not exceed the Deep Zoom level's (OpenSlide's
  ``get_best_level_for_downsample``);
- slide level-0 pixels (``l0``): what ``read_region`` takes as its location.

A tile is the read region scaled down to the Deep Zoom size with PIL's Lanczos
``thumbnail`` (a no-op where the Deep Zoom level coincides with a pyramid level, so there
the tile is exactly the reader's region).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wsi_tumor.slide.base import SlideReader

TILE_SIZE = 254
"""Tile side without overlap: 254 + 2 x 1 = 256 px for interior tiles."""
OVERLAP = 1
"""Pixels each interior tile edge repeats of its neighbour (OpenSeadragon blends them)."""
DZI_XMLNS = "http://schemas.microsoft.com/deepzoom/2008"


def best_level_for_downsample(downsamples: tuple[float, ...], downsample: float) -> int:
    """The finest pyramid level whose downsample is at most ``downsample`` (OpenSlide's rule).

    Level 0 when ``downsample`` is below every level's; the last level when above.
    """
    if downsample < downsamples[0]:
        return 0
    for level in range(1, len(downsamples)):
        if downsample < downsamples[level]:
            return level - 1
    return len(downsamples) - 1


@dataclass(frozen=True)
class TileRead:
    """What one tile reads and how big it comes out.

    Attributes:
        location: Level-0 (x, y) of the read's top-left pixel.
        level: Pyramid level read.
        size: (w, h) read, in pixels of ``level``.
        tile_size: (w, h) of the tile (the read is scaled down to it when it differs).
    """

    location: tuple[int, int]
    level: int
    size: tuple[int, int]
    tile_size: tuple[int, int]


class DeepZoom:
    """The Deep Zoom pyramid of one open slide.

    Args:
        slide: The open reader (not closed by this object).
        tile_size: Tile side without overlap.
        overlap: Overlap on each interior edge.
    """

    def __init__(self, slide: SlideReader, tile_size: int = TILE_SIZE, overlap: int = OVERLAP):
        self.slide = slide
        self.tile_size = tile_size
        self.overlap = overlap
        size = slide.level_dimensions[0]
        dims = [size]
        while size[0] > 1 or size[1] > 1:
            size = (max(1, math.ceil(size[0] / 2)), max(1, math.ceil(size[1] / 2)))
            dims.append(size)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(reversed(dims))
        """(w, h) of each Deep Zoom level, the one-pixel level first."""
        self.level_tiles: tuple[tuple[int, int], ...] = tuple(
            (math.ceil(w / tile_size), math.ceil(h / tile_size)) for w, h in self.level_dimensions
        )
        """(columns, rows) of tiles of each Deep Zoom level."""
        count = len(self.level_dimensions)
        downsamples = slide.level_downsamples
        self._slide_level = tuple(
            best_level_for_downsample(downsamples, 2 ** (count - z - 1)) for z in range(count)
        )
        self._l_per_z = tuple(
            2 ** (count - z - 1) / downsamples[self._slide_level[z]] for z in range(count)
        )

    @property
    def level_count(self) -> int:
        """Number of Deep Zoom levels."""
        return len(self.level_dimensions)

    def dzi(self, url: str, tile_format: str = "jpeg") -> dict[str, object]:
        """The DZI descriptor in OpenSeadragon's JSON form, tiles under ``url``."""
        width, height = self.level_dimensions[-1]
        return {
            "Image": {
                "xmlns": DZI_XMLNS,
                "Url": url,
                "Format": tile_format,
                "Overlap": str(self.overlap),
                "TileSize": str(self.tile_size),
                "Size": {"Width": str(width), "Height": str(height)},
            }
        }

    def tile_read(self, level: int, col: int, row: int) -> TileRead:
        """Where tile (col, row) of Deep Zoom ``level`` reads and its size.

        Raises:
            ValueError: the level or the address is outside the pyramid.
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"Deep Zoom level {level} outside 0..{self.level_count - 1}")
        tiles = self.level_tiles[level]
        if not (0 <= col < tiles[0] and 0 <= row < tiles[1]):
            raise ValueError(f"tile ({col}, {row}) outside the {tiles} tiles of level {level}")
        slide_level = self._slide_level[level]
        downsample = self.slide.level_downsamples[slide_level]
        level_size = self.slide.level_dimensions[slide_level]
        location: list[int] = []
        read: list[int] = []
        out: list[int] = []
        for t, t_lim, z_lim, l_lim in zip(
            (col, row), tiles, self.level_dimensions[level], level_size, strict=True
        ):
            before = self.overlap * int(t != 0)
            after = self.overlap * int(t != t_lim - 1)
            z_size = min(self.tile_size, z_lim - self.tile_size * t) + before + after
            l_start = self._l_per_z[level] * (self.tile_size * t - before)
            location.append(int(downsample * l_start))
            read.append(
                int(min(math.ceil(self._l_per_z[level] * z_size), l_lim - math.ceil(l_start)))
            )
            out.append(z_size)
        return TileRead(
            (location[0], location[1]), slide_level, (read[0], read[1]), (out[0], out[1])
        )

    def tile(self, level: int, col: int, row: int) -> npt.NDArray[np.uint8]:
        """Pixels (h, w, 3) uint8 of tile (col, row) of Deep Zoom ``level``.

        Raises:
            ValueError: the level or the address is outside the pyramid.
            SlideError: the reader cannot read the region.
        """
        from PIL import Image

        spec = self.tile_read(level, col, row)
        pixels = self.slide.read_region(spec.location, spec.size, spec.level)
        if spec.size == spec.tile_size:
            return pixels
        image = Image.fromarray(pixels)
        image.thumbnail(spec.tile_size, Image.Resampling.LANCZOS)
        return np.asarray(image, dtype=np.uint8)
