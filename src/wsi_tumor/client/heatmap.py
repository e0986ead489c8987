"""The heatmap overlay: the probability map coloured over a low-resolution slide thumbnail.

The thumbnail comes from a pyramid level (the coarsest one at least as fine as the mask
level, never level 0 when the slide has other levels), read in horizontal strips and scaled
down to at most ``THUMBNAIL_MAX`` pixels a side, so memory stays small for any slide.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.slide.base import FILL_VALUE, SlideReader

log = logging.getLogger(__name__)

THUMBNAIL_MAX = 2048
"""Longest side of the heatmap PNG in pixels."""
STRIP_ROWS = 1024
"""Rows of the thumbnail level read at once."""
PIXELS_PER_CELL = 8
"""Heatmap pixels per mask cell (before the ``THUMBNAIL_MAX`` cap)."""
COLORMAP = "jet"


def thumbnail_level(slide: SlideReader) -> int | None:
    """The pyramid level the thumbnail is read from, or None for a single-level slide.

    The coarsest level whose downsample is at most the mask level's (so the thumbnail is at
    least as detailed as the map), but never level 0 while coarser levels exist.
    """
    downsamples = slide.level_downsamples
    if len(downsamples) < 2:
        return None
    limit = float(contract.PATCH_STRIDE) * 1.01
    fine_enough = [i for i, d in enumerate(downsamples) if i > 0 and d <= limit]
    return max(fine_enough) if fine_enough else 1


def read_thumbnail(slide: SlideReader, shape: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """Read a (rows, cols, 3) thumbnail of the whole slide scaled to ``shape``.

    A single-level slide (which this never reads at level 0) gives a white background.
    """
    from PIL import Image

    rows, cols = shape
    level = thumbnail_level(slide)
    if level is None:
        log.warning("%s has no pyramid; heatmap drawn on a blank background", slide.path)
        return np.full((rows, cols, 3), FILL_VALUE, dtype=np.uint8)
    width, height = slide.level_dimensions[level]
    downsample = slide.level_downsamples[level]
    out = np.empty((rows, cols, 3), dtype=np.uint8)
    scale = rows / height
    for top in range(0, height, STRIP_ROWS):
        bottom = min(top + STRIP_ROWS, height)
        first, last = round(top * scale), round(bottom * scale)
        if last <= first:
            continue
        location = (0, round(top * downsample))
        strip = slide.read_region(location, (width, bottom - top), level)
        image = Image.fromarray(strip).resize((cols, last - first), Image.Resampling.BILINEAR)
        out[first:last] = np.asarray(image)
    return out


def heatmap_size(level0_size: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the heatmap for a level-0 (w, h) slide.

    ``PIXELS_PER_CELL`` pixels per mask cell, at most ``THUMBNAIL_MAX`` a side, the slide's
    aspect ratio.
    """
    width, height = level0_size
    scale = min(PIXELS_PER_CELL / contract.PATCH_STRIDE, THUMBNAIL_MAX / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def render_overlay(
    thumbnail: npt.NDArray[np.uint8],
    prob_map: npt.NDArray[np.float32],
    tissue: npt.NDArray[np.bool_],
    level0_size: tuple[int, int],
    alpha: float = 0.6,
) -> npt.NDArray[np.uint8]:
    """Blend the coloured map over the thumbnail on tissue cells.

    Works in strips of :data:`STRIP_ROWS` thumbnail rows with a 256-entry colour table, so
    its memory is a few strips whatever the slide's size (not several float copies of the
    whole heatmap).

    Args:
        thumbnail: (H, W, 3) uint8.
        prob_map: (rows, cols) probabilities at the mask level.
        tissue: (rows, cols) mask at the mask level.
        level0_size: (w, h) of the slide at level 0, which the thumbnail spans.
        alpha: Opacity of the colour on tissue cells.

    Returns:
        (H, W, 3) uint8.
    """
    from matplotlib import colormaps

    height, width = thumbnail.shape[:2]
    rows, cols = prob_map.shape
    table = (colormaps[COLORMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.float32)
    levels = np.rint(np.clip(prob_map, 0.0, 1.0) * 255.0).astype(np.uint8)
    # Cell (row, col) covers level-0 [col * s, (col + 1) * s): map each thumbnail pixel to
    # the cell holding its level-0 centre so the colours line up with the slide.
    stride = contract.PATCH_STRIDE
    x0 = (np.arange(width) + 0.5) * level0_size[0] / width
    y0 = (np.arange(height) + 0.5) * level0_size[1] / height
    cell_cols = np.minimum(x0 // stride, cols - 1).astype(np.intp)
    cell_rows = np.minimum(y0 // stride, rows - 1).astype(np.intp)
    out = np.empty_like(thumbnail)
    for top in range(0, height, STRIP_ROWS):
        strip_rows = cell_rows[top : top + STRIP_ROWS, None]
        colours = table[levels[strip_rows, cell_cols[None, :]]]
        weight = (np.float32(alpha) * tissue[strip_rows, cell_cols[None, :]])[..., None]
        base = thumbnail[top : top + STRIP_ROWS].astype(np.float32)
        blended = base * (1 - weight) + colours * weight
        out[top : top + STRIP_ROWS] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
