"""Tissue mask on the mask grid: MONAI's rule by default, NCRF's and ink exclusion as options.

The default rule (``rule="monai"``) is exactly MONAI's ``MaskedPatchWSIDataset`` mask,
``ForegroundMask(hsv_threshold={"S": "otsu"})`` (which keeps its default ``threshold="otsu"``
on R, G and B)::

    tissue = (S > otsu(S))                                 # saturated: stained
           & (R <= otsu(R) | G <= otsu(G) | B <= otsu(B))  # darker than the glass somewhere

with S from ``skimage.color.rgb2hsv`` and thresholds from ``skimage.filters.threshold_otsu``.
``rule="ncrf"`` adds NCRF's ``RGB_min = 50`` term, ``& (R > 50) & (G > 50) & (B > 50)``, which
also drops dense, dark haematoxylin-rich tissue (where tumour nuclei crowd): it is there only
to reproduce NCRF. MONAI's rule already leaves out glass, grey or black scanner borders and
black ink on glass (they are not saturated).

``exclude_ink=True`` (an option beyond MONAI's rule, recorded in the slide's report) also
drops cells that are ink by what they are, never by darkness alone: a hue no H&E stain has
(green, cyan, blue, yellow: hue in [0.15, 0.66] with saturation above 0.15), a colour more
saturated than any H&E at this scale (saturation above 0.75: red and magenta markers), or
no colour at all while dark (chroma below 0.08 and value below 0.6: black ink, grey
shadows). Dense haematoxylin stays: dark but strongly coloured (about RGB (92, 44, 117):
hue 0.78, chroma 0.29). Out-of-focus areas are not detected (the mask level has no
texture left to judge focus by).

Otsu always splits a histogram in two, even a flat one: on blank glass it would call the
noisier half of the glass "tissue", and on a crop that is all tissue it would drop the
paler half. So the two saturation classes Otsu finds are checked against
:data:`TISSUE_SATURATION` (the real H&E sample's paler Otsu class has mean 0.25; near-white
glass such as (238, 236, 240) has 0.02): if even the high class's mean is below it there is
no tissue (all-background slide, empty mask: the one place this differs from MONAI, which
would call glass noise tissue); if even the low class's mean reaches it and there is no
glass (under 1 % bright unsaturated cells), everything is tissue; otherwise (glass against
tissue, every real slide) the rule above applies. With ``exclude_ink`` the ink cells are
left out of these statistics too, so a slide covered in marker is thresholded on its
tissue and glass alone.

A slide whose background is dark (median value below 0.3 with most cells darker than 0.25:
fluorescence) is not brightfield H&E and raises :class:`NotBrightfieldError`.

Grid: mask cell (row, col) covers level-0 pixels [row * 2**L, (row + 1) * 2**L) (columns
alike), so the mask has ceil(H0 / 2**L) x ceil(W0 / 2**L) cells. The RGB image on that grid
is the pyramid level whose size is that grid (within one pixel: a floor-rounded level is
edge-padded); failing that, the nearest finer level is read whole and block-averaged in RGB
(factor 2**L / downsample, partial edge blocks averaging their own pixels), which is what a
2x-mean pyramid level would hold. A non-integral factor (a 20x slide read at the model's
resolution, odd pyramids) area-averages with PIL's box filter over the exact cell grid.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsi_tumor.contract import MASK_LEVEL
from wsi_tumor.errors import ConfigError, NotBrightfieldError, NotPyramidalError
from wsi_tumor.slide.base import SlideReader
from wsi_tumor.slide.image import block_mean

log = logging.getLogger(__name__)

MASK_MAX_PIXELS = 1 << 26
"""Most pixels (about 67 Mpx) of one level the mask may read whole."""
TISSUE_SATURATION = 0.1
"""Mean HSV saturation from which an Otsu class counts as stained tissue, not glass."""
RGB_MIN = 50
"""NCRF's RGB_min: pixels with any channel at or below this are not tissue."""
GLASS_VALUE, GLASS_SATURATION, GLASS_SHARE = 0.85, 0.05, 0.01
"""Bright, unsaturated cells are glass; with 1 % of them a slide is not "all tissue"."""
TISSUE_RULES = ("monai", "ncrf")
"""``--tissue-rule`` values: MONAI's mask (default) or NCRF's (adds RGB_min)."""
INK_HUES = (0.15, 0.66)
"""Hues of green, cyan, blue and yellow ink, which no H&E stain has."""
INK_MIN_SATURATION = 0.15
MARKER_SATURATION = 0.75
"""Saturation above any H&E cell at the mask level: red and magenta marker."""
COLOURLESS_CHROMA = 0.08
COLOURLESS_MAX_VALUE = 0.6
"""Cells this colourless and this dark are black ink or grey shadow, not stained tissue."""
DARK_BACKGROUND_VALUE = (0.3, 0.25, 0.5)
"""Not brightfield: median value below 0.3 and more than half the cells darker than 0.25."""


def mask_shape(slide: SlideReader, level: int = MASK_LEVEL) -> tuple[int, int]:
    """(rows, cols) of the mask grid: (ceil(H0 / 2**level), ceil(W0 / 2**level))."""
    width, height = slide.level_dimensions[0]
    step = 2**level
    return -(-height // step), -(-width // step)


def tissue_from_rgb(
    rgb: npt.NDArray[np.uint8], rule: str = "monai", exclude_ink: bool = False
) -> npt.NDArray[np.bool_]:
    """Tissue pixels of an (h, w, 3) uint8 RGB image (rules in the module docstring).

    Args:
        rgb: The image on the mask grid.
        rule: ``monai`` (default) or ``ncrf``.
        exclude_ink: Also drop ink and colourless dark cells.
    """
    from skimage.color import rgb2hsv

    if rule not in TISSUE_RULES:
        raise ConfigError(f"--tissue-rule must be one of {', '.join(TISSUE_RULES)}, got {rule!r}")
    hsv = rgb2hsv(rgb)
    saturation = hsv[..., 1]
    keep = np.all(rgb > RGB_MIN, axis=-1) if rule == "ncrf" else np.ones(saturation.shape, bool)
    counted = np.ones(saturation.shape, bool)
    if exclude_ink:  # ink is neither tissue nor part of the statistics the thresholds come from
        counted = ~ink_cells(rgb, hsv)
        keep &= counted
        if not counted.any():
            return np.zeros(saturation.shape, bool)
    threshold = _otsu(saturation[counted])
    low, high = (saturation <= threshold) & counted, (saturation > threshold) & counted
    low_mean = float(saturation[low].mean()) if low.any() else 0.0
    high_mean = float(saturation[high].mean()) if high.any() else low_mean
    if high_mean < TISSUE_SATURATION:
        log.debug("no stained class (saturation class means %.3f, %.3f)", low_mean, high_mean)
        return np.zeros(saturation.shape, bool)
    glass = (hsv[..., 2] > GLASS_VALUE) & (saturation < GLASS_SATURATION) & counted
    if low_mean >= TISSUE_SATURATION and glass.mean() < GLASS_SHARE:
        log.debug("all stained (saturation class means %.3f, %.3f)", low_mean, high_mean)
        return keep
    darker = np.zeros(saturation.shape, bool)
    for channel in range(3):
        values = rgb[..., channel]
        darker |= values <= _otsu(values[counted])
    return high & darker & keep


def ink_cells(
    rgb: npt.NDArray[np.uint8], hsv: npt.NDArray[np.floating] | None = None
) -> npt.NDArray[np.bool_]:
    """Cells that are ink or colourless dark, by hue, saturation and chroma (module docstring)."""
    from skimage.color import rgb2hsv

    hsv = rgb2hsv(rgb) if hsv is None else hsv
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    chroma = (rgb.max(axis=-1).astype(np.float32) - rgb.min(axis=-1)) / 255.0
    low, high = INK_HUES
    foreign_hue = (hue >= low) & (hue <= high) & (saturation > INK_MIN_SATURATION)
    marker = saturation > MARKER_SATURATION
    colourless = (chroma < COLOURLESS_CHROMA) & (value < COLOURLESS_MAX_VALUE)
    return np.asarray(foreign_hue | marker | colourless)


def check_brightfield(rgb: npt.NDArray[np.uint8], path: object) -> None:
    """Raise NotBrightfieldError when the image's background is dark (fluorescence)."""
    value = rgb.max(axis=-1) / 255.0
    median_limit, dark, share = DARK_BACKGROUND_VALUE
    median = float(np.median(value))
    dark_share = float((value < dark).mean())
    if median < median_limit and dark_share > share:
        raise NotBrightfieldError(
            f"{path}: not a brightfield H&E slide: the background is dark (median brightness "
            f"{median:.2f}, {100 * dark_share:.0f} % of the slide darker than {dark}), as in "
            "fluorescence; the model reads brightfield H&E only"
        )


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
    from PIL import Image

    log.debug("%s: mask from level %d area-averaged by %.4f", slide.path, index, factor)
    height, width = math.ceil(rows * factor), math.ceil(cols * factor)
    pad = ((0, max(0, height - image.shape[0])), (0, max(0, width - image.shape[1])), (0, 0))
    padded = np.pad(image, pad, mode="edge") if any(p[1] for p in pad) else image
    resized = Image.fromarray(padded).resize(
        (cols, rows), Image.Resampling.BOX, box=(0.0, 0.0, cols * factor, rows * factor)
    )
    return np.asarray(resized, dtype=np.uint8)


def tissue_mask(
    slide: SlideReader,
    level: int = MASK_LEVEL,
    max_pixels: int = MASK_MAX_PIXELS,
    *,
    rule: str = "monai",
    exclude_ink: bool = False,
) -> npt.NDArray[np.bool_]:
    """Boolean tissue mask of shape :func:`mask_shape` (row = y, col = x).

    Args:
        slide: An open slide.
        level: Mask level: one cell per 2**level level-0 pixels.
        max_pixels: Most pixels of a pyramid level read whole to build the mask.
        rule: ``monai`` (default: MONAI's MaskedPatchWSIDataset mask) or ``ncrf``.
        exclude_ink: Also drop ink and colourless dark cells (module docstring).

    Returns:
        (rows, cols) bool, True where the cell is tissue.

    Raises:
        NotPyramidalError: No level is small enough to read whole (see :func:`mask_rgb`).
        NotBrightfieldError: The slide's background is dark (fluorescence).
    """
    rgb = mask_rgb(slide, level, max_pixels)
    check_brightfield(rgb, slide.path)
    mask = tissue_from_rgb(rgb, rule, exclude_ink)
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
