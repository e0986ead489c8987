"""The check's slides: an H&E-like ellipse of tissue on glass, JPEG-tiled, with a mask level.

Level 0 repeats a few dozen distinct 256 px tissue tiles (cut from
:func:`wsi_bench.jpeg_slide.synthetic_he`, each encoded once) and one glass tile, so a slide
of 267,904 nominal tissue cells (38,912 px a side, about 0.36 GB) is written in seconds while every
tile the client reads is a real JPEG decode. The second page, at downsample 64, is each
level-0 tile's 4 x 4 block mean: the level the client's tissue mask reads, consistent with
level 0 by construction.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsi_bench.jpeg_slide import (
    Page,
    encode_tile,
    jpeg_page,
    jpeg_subsampling,
    split_jpeg_tables,
    synthetic_he,
    write_jpeg_tiff,
)
from wsi_tumor import contract
from wsi_tumor.slide.image import block_mean

TILE = 256
MASK_DOWNSAMPLE = 2**contract.MASK_LEVEL
CELLS_PER_TILE = (TILE // contract.PATCH_STRIDE) ** 2
ELLIPSE_SHARE = math.pi / 4 * 0.96**2
"""Share of the slide's tiles inside the tissue ellipse (semi-axes 0.48 of the side)."""
DISTINCT_TILES = 48
GLASS = (238, 236, 241)


def side_for(cells: int) -> int:
    """Tiles a side of a slide with about ``cells`` tissue cells (a little more)."""
    return math.ceil(math.sqrt(cells / CELLS_PER_TILE / ELLIPSE_SHARE)) + 2


def _tissue_tiles(seed: int) -> list[npt.NDArray[np.uint8]]:
    """The :data:`DISTINCT_TILES` 256 px tiles of the texture with the most tissue (at least
    half; the texture's fat holes and glass make a few tiles pale)."""
    canvas = synthetic_he(2048, seed)
    tiles = [canvas[y : y + TILE, x : x + TILE] for y in range(0, 2048, TILE)
             for x in range(0, 2048, TILE)]  # fmt: skip
    share = [float((t.mean(axis=2) < 215).mean()) for t in tiles]
    ranked = sorted(range(len(tiles)), key=lambda i: -share[i])
    chosen = [tiles[i] for i in ranked[:DISTINCT_TILES] if share[i] >= 0.5]
    if not chosen:
        raise ValueError(f"the texture of seed {seed} has no tissue tile")
    return chosen


def write_serve_slide(path: Path, side_tiles: int, seed: int = 0) -> dict[str, float | int]:
    """Write a ``side_tiles`` x ``side_tiles``-tile slide; describe it.

    Returns:
        Level-0 size, tiles, the tissue tiles (x 16 cells each) and the file's bytes.
    """
    rng = np.random.default_rng(seed)
    sources = _tissue_tiles(seed)
    glass = np.clip(rng.normal(GLASS, 2.5, (TILE, TILE, 3)), 0, 255).astype(np.uint8)
    images = [glass, *sources]
    streams = [encode_tile(image) for image in images]
    tables, _ = split_jpeg_tables(streams[0])
    abbreviated = [split_jpeg_tables(s)[1] for s in streams]
    small = [block_mean(image, MASK_DOWNSAMPLE) for image in images]  # 4 x 4 each
    centre = (side_tiles - 1) / 2
    rows, cols = np.mgrid[:side_tiles, :side_tiles]
    inside = ((rows - centre) ** 2 + (cols - centre) ** 2) < (0.48 * side_tiles) ** 2
    choice = np.where(inside, 1 + rng.integers(0, len(sources), inside.shape), 0)
    side = side_tiles * TILE
    tiles = [abbreviated[i] for i in choice.ravel()]  # the same bytes objects, repeated
    level0 = Page(side, side, TILE, tiles, tables, jpeg_subsampling(streams[0]))
    thumb = np.concatenate([np.concatenate([small[i] for i in row], axis=1) for row in choice])
    mask_level = jpeg_page(thumb, TILE, reduced=True)
    size = write_jpeg_tiff(path, [level0, mask_level])
    return {
        "side_px": side,
        "tiles": side_tiles**2,
        "tissue_tiles": int(inside.sum()),
        "nominal_tissue_cells": int(inside.sum()) * CELLS_PER_TILE,
        "distinct_tissue_tiles": len(sources),
        "bytes": size,
        "bits_per_pixel": round(8 * size / side**2, 3),
    }
