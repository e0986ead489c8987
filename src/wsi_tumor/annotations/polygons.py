"""Point tests and rasterisation of lesion polygons (:class:`..formats.Polygon`).

A point is tumour when it lies inside some tumour polygon and inside no exclusion polygon;
:func:`rasterize` paints masks by the same rule. Polygons of other groups are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from skimage.measure import points_in_poly

from wsi_tumor.annotations.formats import FloatArray, Polygon

_ROW_CHUNK = 256
"""Rows filled per vectorised step."""


def contains(polygons: Iterable[Polygon], points: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Which level-0 (x, y) points are tumour: inside a tumour polygon and no exclusion.

    Args:
        polygons: Annotation polygons.
        points: (n, 2) level-0 (x, y).

    Returns:
        (n,) bool.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    inside = np.zeros(len(pts), dtype=bool)
    excluded = np.zeros(len(pts), dtype=bool)
    for polygon in polygons:
        if polygon.is_tumor:
            inside |= points_in_poly(pts, polygon.vertices)
        elif polygon.is_exclusion:
            excluded |= points_in_poly(pts, polygon.vertices)
    return inside & ~excluded


def _fill_polygon(
    vertices: FloatArray,
    out: npt.NDArray[np.bool_],
    origin: tuple[int, int],
    downsample: float,
) -> None:
    """OR the even-odd interior of one polygon into ``out`` (scanline, pixel centres).

    Pixel (r, c) of ``out`` has its centre at level-0 ((origin_col + c + 0.5) * downsample,
    (origin_row + r + 0.5) * downsample). Cost is linear in the pixels of the polygon's
    bounding box plus the edge crossings, whatever the number of vertices.
    """
    col0, row0 = origin
    rows, cols = out.shape
    scaled = vertices / downsample - 0.5  # in (col, row) pixel-index units of this level
    xs, ys = scaled[:, 0] - col0, scaled[:, 1] - row0
    r_lo, r_hi = max(0, math.ceil(ys.min())), min(rows, math.floor(ys.max()) + 1)
    c_lo, c_hi = max(0, math.ceil(xs.min())), min(cols, math.floor(xs.max()) + 1)
    if r_lo >= r_hi or c_lo >= c_hi:
        return
    x0, y0 = xs, ys
    x1, y1 = np.roll(xs, -1), np.roll(ys, -1)
    for start in range(r_lo, r_hi, _ROW_CHUNK):
        row_idx = np.arange(start, min(r_hi, start + _ROW_CHUNK), dtype=np.float64)
        yc = row_idx[:, None]
        crossing = (y0 <= yc) != (y1 <= yc)  # half-open rule: each vertex counted once
        r_hit, e_hit = np.nonzero(crossing)
        if r_hit.size == 0:
            continue
        t = (row_idx[r_hit] - y0[e_hit]) / (y1[e_hit] - y0[e_hit])
        x_cross = x0[e_hit] + t * (x1[e_hit] - x0[e_hit])
        first_inside = np.clip(np.floor(x_cross).astype(np.int64) + 1 - c_lo, 0, c_hi - c_lo)
        toggles = np.zeros((len(row_idx), c_hi - c_lo + 1), dtype=np.int32)
        np.add.at(toggles, (r_hit, first_inside), 1)
        parity = (np.cumsum(toggles[:, :-1], axis=1) & 1).astype(bool)
        block = out[start : start + len(row_idx), c_lo:c_hi]
        block |= parity


def fill_polygons(
    vertex_arrays: Iterable[npt.ArrayLike],
    origin: tuple[int, int],
    shape: tuple[int, int],
    downsample: float,
) -> npt.NDArray[np.bool_]:
    """Union of the even-odd interiors of plain vertex arrays over a window of a level.

    The same scanline rule as :func:`rasterize_region`, for shapes that are not
    annotations (the generator's tissue sections).

    Args:
        vertex_arrays: (n, 2) level-0 (x, y) arrays.
        origin: (col, row) of the window's top-left pixel at this level.
        shape: (rows, cols) of the window.
        downsample: Level downsample relative to level 0.

    Returns:
        (rows, cols) bool.
    """
    out = np.zeros(shape, dtype=bool)
    for vertices in vertex_arrays:
        _fill_polygon(np.asarray(vertices, dtype=np.float64), out, origin, downsample)
    return out


def rasterize_region(
    polygons: Iterable[Polygon],
    origin: tuple[int, int],
    shape: tuple[int, int],
    downsample: float,
) -> npt.NDArray[np.uint8]:
    """Rasterise a window of a pyramid level: 1 where tumour, 0 elsewhere.

    Args:
        polygons: Annotation polygons (level-0 vertices).
        origin: (col, row) of the window's top-left pixel at this level.
        shape: (rows, cols) of the window.
        downsample: Level downsample relative to level 0.

    Returns:
        (rows, cols) uint8 0/1; a pixel is 1 when its centre is inside a tumour polygon
        and inside no exclusion polygon (even-odd rule per polygon).
    """
    if downsample <= 0:
        raise ValueError(f"downsample must be positive, got {downsample}")
    tumour = np.zeros(shape, dtype=bool)
    excluded = np.zeros(shape, dtype=bool)
    for polygon in polygons:
        if polygon.is_tumor:
            _fill_polygon(polygon.vertices, tumour, origin, downsample)
        elif polygon.is_exclusion:
            _fill_polygon(polygon.vertices, excluded, origin, downsample)
    return (tumour & ~excluded).astype(np.uint8)


def rasterize(
    polygons: Iterable[Polygon], shape: tuple[int, int], downsample: float
) -> npt.NDArray[np.uint8]:
    """Rasterise polygons onto a whole pyramid level (pixel centres, exclusions cut out).

    Agrees with ``skimage.draw.polygon`` on ``vertices / downsample - 0.5`` except, at
    most, for pixel centres lying exactly on an edge.

    Args:
        polygons: Annotation polygons (level-0 vertices).
        shape: (rows, cols) of the level.
        downsample: Level downsample relative to level 0 (32.0 for level 5).

    Returns:
        (rows, cols) uint8 mask, 1 = tumour, 0 = not.
    """
    return rasterize_region(polygons, (0, 0), shape, downsample)
