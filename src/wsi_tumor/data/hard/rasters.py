"""Planning-raster morphology for the hard preset: fill, grow, shrink, outline, fit.

Rasters are at :data:`~wsi_tumor.data.geometry.PLAN_DOWNSAMPLE`; distances are level-0 px.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage, signal
from skimage.measure import approximate_polygon, find_contours

from wsi_tumor.annotations.polygons import fill_polygons
from wsi_tumor.data.geometry import PLAN_DOWNSAMPLE

Vertices = npt.NDArray[np.float64]
Raster = npt.NDArray[np.bool_]


def raster_of(polygons: Sequence[Vertices], shape: tuple[int, int]) -> Raster:
    """Polygons filled on a planning raster of ``shape``."""
    return fill_polygons(polygons, (0, 0), shape, PLAN_DOWNSAMPLE)


def grow(raster: Raster, px: float) -> Raster:
    """Pixels of the planning raster within ``px`` level-0 pixels of ``raster``."""
    if not raster.any():
        return raster.copy()
    near: Raster = ndimage.distance_transform_edt(~raster) * PLAN_DOWNSAMPLE <= px
    return near


def shrink(raster: Raster, px: float) -> Raster:
    """Pixels of ``raster`` more than ``px`` level-0 pixels from its outside."""
    inner: Raster = ndimage.distance_transform_edt(raster) * PLAN_DOWNSAMPLE > px
    return inner


def outlines(raster: Raster, min_area_px: float) -> list[Vertices]:
    """Smooth level-0 outlines of the regions of a planning raster (holes filled)."""
    filled = ndimage.binary_fill_holes(np.pad(raster, 2))
    smooth = ndimage.gaussian_filter(filled.astype(np.float32), 1.2)
    result = []
    for contour in find_contours(smooth, 0.5):
        simple = approximate_polygon(contour, 0.4)
        if len(simple) > 3 and np.allclose(simple[0], simple[-1]):
            simple = simple[:-1]
        if len(simple) < 3:
            continue
        xy = np.stack([simple[:, 1] - 2 + 0.5, simple[:, 0] - 2 + 0.5], axis=1) * PLAN_DOWNSAMPLE
        x, y = xy[:, 0], xy[:, 1]
        area = abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2
        if area >= min_area_px:
            result.append(np.round(xy, 1))
    return result


def fit_positions(forbidden: Raster, footprint: Raster) -> npt.NDArray[np.int64]:
    """Top-left raster positions where ``footprint`` overlaps no forbidden pixel.

    Returns:
        (n, 2) int (row, col) positions.
    """
    rows, cols = forbidden.shape
    fr, fc = footprint.shape
    if fr > rows or fc > cols or not footprint.any():
        return np.zeros((0, 2), np.int64)
    overlap = signal.fftconvolve(
        forbidden.astype(np.float32), footprint[::-1, ::-1].astype(np.float32), mode="valid"
    )
    return np.argwhere(overlap < 0.5).astype(np.int64)
