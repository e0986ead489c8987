"""Tissue mask on the mask grid: Otsu on HSV saturation, as MONAI and NCRF compute it.

The rule (:func:`tissue_from_rgb`) is NCRF's ``wsi/bin/tissue_mask.py``, whose first two
terms are exactly MONAI's ``ForegroundMask(hsv_threshold={"S": "otsu"})`` (which keeps its
default ``threshold="otsu"`` on R, G and B)::

    tissue = (S > otsu(S))                              # saturated: stained
           & (R <= otsu(R) | G <= otsu(G) | B <= otsu(B))  # darker than the glass somewhere
           & (R > 50) & (G > 50) & (B > 50)              # NCRF's RGB_min: not black ink

with S from ``skimage.color.rgb2hsv`` and thresholds from ``skimage.filters.threshold_otsu``.

Otsu always splits a histogram in two, even a flat one: on blank glass it would call the
noisier half of the glass "tissue", and on a crop that is all tissue it would drop the
paler half. So the two saturation classes Otsu finds are checked against
:data:`TISSUE_SATURATION` (the real H&E sample's paler Otsu class has mean 0.25; near-white
glass such as (238, 236, 240) has 0.02): if
even the high class's mean is below it there is no tissue (all-background slide, empty
mask); if even the low class's mean reaches it, everything not black is tissue; only
otherwise (glass against tissue, every real slide) does the rule above apply.

Grid: mask cell (row, col) covers level-0 pixels [row * 2**L, (row + 1) * 2**L) (columns
alike), so the mask has ceil(H0 / 2**L) x ceil(W0 / 2**L) cells. The RGB image on that grid
is the pyramid level whose size is that grid (within one pixel: a floor-rounded level is
edge-padded); failing that, the nearest finer level is read whole and block-averaged in RGB
(factor 2**L / downsample, partial edge blocks averaging their own pixels), which is what a
2x-mean pyramid level would hold. A non-integral factor uses antialiased bilinear
``skimage.transform.resize``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsi_tumor.contract import MASK_LEVEL
from wsi_tumor.errors import NotPyramidalError
from wsi_tumor.slide.base import SlideReader
from wsi_tumor.slide.virtual import block_mean

log = logging.getLogger(__name__)

MASK_MAX_PIXELS = 1 << 26
"""Most pixels (about 67 Mpx) of one level the mask may read whole."""
TISSUE_SATURATION = 0.1
"""Mean HSV saturation from which an Otsu class counts as stained tissue, not glass."""
RGB_MIN = 50
"""NCRF's RGB_min: pixels with any channel at or below this are not tissue."""


def mask_shape(slide: SlideReader, level: int = MASK_LEVEL) -> tuple[int, int]:
    """(rows, cols) of the mask grid: (ceil(H0 / 2**level), ceil(W0 / 2**level))."""
    width, height = slide.level_dimensions[0]
    step = 2**level
    return -(-height // step), -(-width // step)


def tissue_from_rgb(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Tissue pixels of an (h, w, 3) uint8 RGB image (rule in the module docstring)."""
    from skimage.color import rgb2hsv

    saturation = rgb2hsv(rgb)[..., 1]
    not_black = np.all(rgb > RGB_MIN, axis=-1)
    threshold = _otsu(saturation)
    low, high = saturation <= threshold, saturation > threshold
    low_mean = float(saturation[low].mean()) if low.any() else 0.0
    high_mean = float(saturation[high].mean()) if high.any() else low_mean
    if high_mean < TISSUE_SATURATION:
        log.debug("no stained class (saturation class means %.3f, %.3f)", low_mean, high_mean)
        return np.zeros(saturation.shape, bool)
    if low_mean >= TISSUE_SATURATION:
        log.debug("all stained (saturation class means %.3f, %.3f)", low_mean, high_mean)
        return not_black
    darker = np.zeros(saturation.shape, bool)
    for channel in range(3):
        values = rgb[..., channel]
        darker |= values <= _otsu(values)
    return high & darker & not_black


def mask_rgb(
    slide: SlideReader, level: int = MASK_LEVEL, max_pixels: int = MASK_MAX_PIXELS
) -> npt.NDArray[np.uint8]:
    """The slide's RGB image on the mask grid, (rows, cols, 3) uint8 (see module docstring).

    Raises:
        NotPyramidalError: The level that would have to be read has more than
            ``max_pixels`` pixels (e.g. a single-level gigapixel slide).
    """
    rows, cols = mask_shape(slide, level)
    target = float(2**level)
    dims, downsamples = slide.level_dimensions, slide.level_downsamples
    for index, (w, h) in enumerate(dims):
        if abs(w - cols) <= 1 and abs(h - rows) <= 1 and abs(downsamples[index] - target) < 0.5:
            log.debug("%s: mask from level %d (%d x %d)", slide.path, index, w, h)
            return _fit(_read_whole(slide, index, max_pixels), rows, cols)
    finer = [i for i, d in enumerate(downsamples) if d < target] or [0]
    index = max(finer, key=lambda i: downsamples[i])
    image = _read_whole(slide, index, max_pixels)
    factor = target / downsamples[index]
    if abs(factor - round(factor)) < 1e-3:
        log.debug("%s: mask from level %d block-averaged by %d", slide.path, index, round(factor))
        return _fit(block_mean(image, round(factor)), rows, cols)
    from skimage.transform import resize

    log.debug("%s: mask from level %d resized by %.4f", slide.path, index, factor)
    resized = resize(image, (rows, cols), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


def tissue_mask(
    slide: SlideReader, level: int = MASK_LEVEL, max_pixels: int = MASK_MAX_PIXELS
) -> npt.NDArray[np.bool_]:
    """Boolean tissue mask of shape :func:`mask_shape` (row = y, col = x).

    Args:
        slide: An open slide.
        level: Mask level: one cell per 2**level level-0 pixels.
        max_pixels: Most pixels of a pyramid level read whole to build the mask.

    Returns:
        (rows, cols) bool, True where the cell is tissue.

    Raises:
        NotPyramidalError: No level is small enough to read whole (see :func:`mask_rgb`).
    """
    mask = tissue_from_rgb(mask_rgb(slide, level, max_pixels))
    log.info("%s: tissue in %d of %d mask cells", slide.path, int(mask.sum()), mask.size)
    return mask


def save_mask_png(mask: npt.NDArray[np.bool_], path: str | Path) -> Path:
    """Write a boolean mask as an 8-bit PNG (tissue 255, background 0); returns the path."""
    from PIL import Image

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(np.asarray(mask, bool), 255, 0).astype(np.uint8)).save(out)
    return out


def _otsu(values: npt.NDArray[np.generic]) -> float:
    from skimage.filters import threshold_otsu

    low, high = float(values.min()), float(values.max())
    if math.isclose(low, high):
        return high
    return float(threshold_otsu(values))


def _read_whole(slide: SlideReader, level: int, max_pixels: int) -> npt.NDArray[np.uint8]:
    w, h = slide.level_dimensions[level]
    if w * h > max_pixels:
        raise NotPyramidalError(
            f"{slide.path}: no pyramid level near the mask's downsample; reading level "
            f"{level} ({w} x {h} = {w * h} px) whole exceeds the tissue-mask budget of "
            f"{max_pixels} px"
        )
    return slide.read_region((0, 0), (w, h), level)


def _fit(image: npt.NDArray[np.uint8], rows: int, cols: int) -> npt.NDArray[np.uint8]:
    """Crop or edge-pad an image by at most a pixel or so to (rows, cols)."""
    image = image[:rows, :cols]
    pad_rows, pad_cols = rows - image.shape[0], cols - image.shape[1]
    if pad_rows or pad_cols:
        image = np.pad(image, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
    return np.ascontiguousarray(image)
