"""Ground-truth masks for FROC: reading a pyramid level, the evaluation mask and ITCs.

The formulas are the CAMELYON16 organisers' (``Evaluation_FROC.py``): tumour regions are
grown by 75 um (half on each side, hence the factor 2), holes are filled, regions are
labelled with 8-connectivity, and a region whose major axis is below 275 um (200 um ITC
diameter + the 75 um growth) is an isolated tumour cell (ITC) cluster.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tifffile
from scipy import ndimage
from skimage import measure

from wsi_tumor.contract import DEFAULT_MPP
from wsi_tumor.errors import EvaluationError

log = logging.getLogger(__name__)

GROW_DISTANCE_UM = 75.0
"""Tumour regions are grown by this distance (the size of about five tumour cells)."""
ITC_DIAMETER_UM = 200.0
"""Regions whose longest diameter is below this are isolated tumour cells."""

LabelMask = npt.NDArray[np.int64]


def grow_threshold_px(level: int, mpp: float = DEFAULT_MPP) -> float:
    """Distance (mask pixels) below which a non-tumour pixel joins a lesion.

    ``75 / (mpp * 2**level * 2)``: 4.82 px at level 5 with 0.243 um/px.
    """
    return GROW_DISTANCE_UM / (mpp * 2**level * 2)


def itc_threshold_px(level: int, mpp: float = DEFAULT_MPP) -> float:
    """Major-axis length (mask pixels) below which a region is an ITC.

    ``(200 + 75) / (mpp * 2**level)``: 35.37 px at level 5 with 0.243 um/px.
    """
    return (ITC_DIAMETER_UM + GROW_DISTANCE_UM) / (mpp * 2**level)


def read_mask_level(path: str | Path, level: int) -> npt.NDArray[np.uint8]:
    """Read the pyramid level of a mask TIFF whose downsample is ``2**level``.

    The level is found by size, not by index: SubIFD and page pyramids both work, and a
    level counts when its width and height are within one pixel of level 0's divided by
    ``2**level`` (pyramids round either way). RGB(A) masks use their first channel, as
    the organisers' script does.

    Args:
        path: Mask TIFF (pyramidal, single-channel uint8).
        level: Wanted level (downsample ``2**level``).

    Returns:
        (rows, cols) uint8 array.

    Raises:
        EvaluationError: The file cannot be read or has no such level (the message lists
            the downsamples it has).
    """
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            pages = _collect_pages(tif)
            base_w, base_h = pages[0].imagewidth, pages[0].imagelength
            factor = 2**level
            found = [
                p
                for p in pages
                if abs(p.imagewidth - base_w / factor) <= 1
                and abs(p.imagelength - base_h / factor) <= 1
            ]
            if not found:
                have = sorted({round(base_w / p.imagewidth, 2) for p in pages})
                raise EvaluationError(
                    f"{path}: mask has no level {level} (downsample {factor}); it has "
                    f"{len(have)} level(s) with downsamples {have} "
                    f"(level 0 is {base_w}x{base_h})"
                )
            data = np.asarray(found[0].asarray())
    except EvaluationError:
        raise
    except Exception as exc:  # tifffile raises many types for a broken file
        raise EvaluationError(f"{path}: cannot read mask TIFF: {exc}") from exc
    if data.ndim == 3:
        data = data[..., 0]
    if data.ndim != 2:
        raise EvaluationError(f"{path}: mask level {level} has unexpected shape {data.shape}")
    return data.astype(np.uint8, copy=False)


def _collect_pages(tif: tifffile.TiffFile) -> list[tifffile.TiffPage]:
    """Top-level pages plus SubIFD pages, largest first."""
    pages: list[tifffile.TiffPage] = []
    for series in tif.series:
        for lvl in series.levels:
            pages.extend(p for p in lvl.pages if isinstance(p, tifffile.TiffPage))
    for page in tif.pages:
        if isinstance(page, tifffile.TiffPage) and all(page is not p for p in pages):
            pages.append(page)
    if not pages:
        raise EvaluationError(f"{tif.filename}: TIFF has no images")
    # drop duplicates (same offset) and sort level 0 first
    unique = {p.offset: p for p in pages}
    return sorted(unique.values(), key=lambda p: -(p.imagewidth * p.imagelength))


def binarise_mask(mask: npt.ArrayLike, source: str = "mask") -> npt.NDArray[np.bool_]:
    """Tumour pixels of a 0/255 (CAMELYON16) or 0/1 mask, chosen explicitly.

    A mask whose maximum is 255 has tumour where it equals 255, as the organisers'
    ``255 - mask`` distance transform implies (other values are non-tumour, with a
    warning). A mask whose values are all 0 or 1 has tumour where it is 1. Anything else
    is ambiguous and rejected.

    Args:
        mask: (rows, cols) integer mask.
        source: Name for messages (the file).

    Returns:
        Boolean tumour mask.

    Raises:
        EvaluationError: The values are neither a 0/255 nor a 0/1 mask.
    """
    arr = np.asarray(mask)
    top = int(arr.max()) if arr.size else 0
    if top <= 1:
        if arr.size and int(arr.min()) < 0:
            raise EvaluationError(f"{source}: mask has negative values")
        return arr == 1
    if top == 255:
        tumour = arr == 255
        other = int(np.count_nonzero((arr != 0) & ~tumour))
        if other:
            log.warning("%s: %d mask pixels are neither 0 nor 255; not tumour", source, other)
        return np.asarray(tumour)
    values = np.unique(arr)[:8].tolist()
    raise EvaluationError(
        f"{source}: mask values {values} are neither 0/255 (tumour = 255) nor 0/1 (tumour = 1)"
    )


def evaluation_mask(tumour: npt.ArrayLike, level: int, mpp: float = DEFAULT_MPP) -> LabelMask:
    """Label the lesions of a boolean tumour mask as the organisers' script does.

    Distance transform of the non-tumour area; pixels strictly closer than
    :func:`grow_threshold_px` to tumour become tumour; holes are filled; regions are
    labelled with 8-connectivity (1..n, 0 = background).

    Args:
        tumour: (rows, cols) boolean tumour mask at ``level``.
        level: Pyramid level of the mask.
        mpp: Level-0 microns per pixel of the slide.

    Returns:
        (rows, cols) int64 label image.
    """
    tumour_arr = np.asarray(tumour, dtype=bool)
    distance = ndimage.distance_transform_edt(~tumour_arr)
    grown = distance < grow_threshold_px(level, mpp)
    filled = ndimage.binary_fill_holes(grown)
    return np.asarray(measure.label(filled, connectivity=2), dtype=np.int64)


def itc_labels(labels: LabelMask, level: int, mpp: float = DEFAULT_MPP) -> list[int]:
    """Labels whose major axis length (regionprops) is below :func:`itc_threshold_px`.

    Args:
        labels: Label image from :func:`evaluation_mask`.
        level: Pyramid level of the labels.
        mpp: Level-0 microns per pixel of the slide.

    Returns:
        Sorted ITC labels.
    """
    threshold = itc_threshold_px(level, mpp)
    return sorted(
        int(region.label)
        for region in measure.regionprops(np.asarray(labels))
        if region.axis_major_length < threshold  # the organisers' major_axis_length
    )
