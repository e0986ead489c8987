"""Where things lie on a synthetic slide: tissue sections and lesion polygons.

Planning happens on rasters at downsample :data:`PLAN_DOWNSAMPLE` (16): a lesion is placed
where every vertex is at least a margin inside tissue not yet used by another lesion, so
lesions lie inside tissue and stay apart (they do not merge when FROC grows them by 75 um).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from wsi_tumor.annotations.formats import Polygon
from wsi_tumor.annotations.polygons import fill_polygons, rasterize

PLAN_DOWNSAMPLE = 16
"""Downsample of the planning rasters (also used to sample patch centres)."""
ITC_MAJOR_UM = 200.0
"""Lesions whose major axis is below this are isolated tumour cells (CAMELYON16)."""
MIN_NON_ITC_MAJOR_PX = 1300.0
"""Every tumour slide gets one lesion at least this long (316 um, clearly above 275 um)."""
MACRO_MAJOR_PX = (9000.0, 10500.0)
"""Major-axis range (2.2-2.55 mm) of the first lesion when the slide is >= 12000 px."""
ITC_MAJOR_PX = (160.0, 700.0)
"""Major-axis range of ITC-sized lesions (39-170 um)."""
LESION_SEPARATION_PX = 350.0
"""Minimum gap between lesions (about 85 um)."""

Vertices = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LesionInfo:
    """Summary of one tumour polygon, for dataset.json and tests.

    Attributes:
        name: Annotation name.
        major_um: Longest vertex-to-vertex distance in microns.
        is_itc: ``major_um`` < 200.
    """

    name: str
    major_um: float
    is_itc: bool


@dataclass(frozen=True)
class SlideGeometry:
    """Tissue sections and annotations of one slide.

    Attributes:
        size: Side of the square slide, level-0 pixels.
        tissue: (n, 2) level-0 (x, y) outlines of the tissue sections.
        annotations: Tumour (``_0``) and exclusion (``_2``) polygons; empty for normal slides.
        lesions: One entry per tumour polygon.
    """

    size: int
    tissue: tuple[Vertices, ...]
    annotations: tuple[Polygon, ...]
    lesions: tuple[LesionInfo, ...]

    @property
    def width(self) -> int:
        """Slide width (the slide is square)."""
        return self.size

    @property
    def height(self) -> int:
        """Slide height."""
        return self.size

    def plan_shape(self) -> tuple[int, int]:
        """(rows, cols) of the planning rasters."""
        side = math.ceil(self.size / PLAN_DOWNSAMPLE)
        return side, side

    def tissue_raster(self) -> npt.NDArray[np.bool_]:
        """Tissue at the planning downsample."""
        return fill_polygons(self.tissue, (0, 0), self.plan_shape(), PLAN_DOWNSAMPLE)

    def tumour_raster(self, include_itc: bool = True) -> npt.NDArray[np.bool_]:
        """Tumour (exclusions cut out) at the planning downsample."""
        itc = {info.name for info in self.lesions if info.is_itc}
        polygons = [p for p in self.annotations if include_itc or p.name not in itc]
        return rasterize(polygons, self.plan_shape(), PLAN_DOWNSAMPLE).astype(bool)


def blob(
    rng: np.random.Generator,
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
    roughness: float,
    max_vertices: int = 256,
    decimals: int | None = 2,
) -> Vertices:
    """An irregular ellipse: radius modulated by random harmonics 2..5.

    Args:
        rng: Random generator.
        centre: Level-0 (x, y).
        axes: Semi-axes (along ``angle``, across) in pixels.
        angle: Orientation in radians.
        roughness: Amplitude of the outline's modulation (0 = ellipse).
        max_vertices: Most vertices of the outline.
        decimals: Vertices rounded to this many decimals (None: not rounded).

    Returns:
        (n, 2) vertices, n between 24 and ``max_vertices`` (about one every 40 px).
    """
    a, b = axes
    count = int(np.clip(2 * np.pi * max(a, b) / 40, 24, max_vertices))
    theta = np.linspace(0, 2 * np.pi, count, endpoint=False)
    radius = np.ones(count)
    for k in range(2, 6):
        radius += (
            roughness
            * rng.uniform(0.3, 1.0)
            / (k - 1)
            * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        )
    u, v = a * radius * np.cos(theta), b * radius * np.sin(theta)
    x = centre[0] + u * np.cos(angle) - v * np.sin(angle)
    y = centre[1] + u * np.sin(angle) + v * np.cos(angle)
    vertices = np.stack([x, y], axis=1)
    return vertices if decimals is None else np.round(vertices, decimals)


def major_axis_px(vertices: Vertices) -> float:
    """Longest distance between two vertices."""
    diff = vertices[:, None, :] - vertices[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max())


def _tissue_sections(rng: np.random.Generator, size: int) -> list[Vertices]:
    count = 1 if size < 3000 else 2 if size < 6000 else int(rng.integers(2, 4))
    band = size / count
    sections = []
    for i in range(count):
        if count == 1:
            axes = (0.47 * size * rng.uniform(0.93, 1.0), 0.47 * size * rng.uniform(0.9, 1.0))
            roughness = 0.03
        else:
            axes = (0.46 * size * rng.uniform(0.85, 1.0), 0.45 * band * rng.uniform(0.8, 1.0))
            roughness = 0.07
        centre = (
            size / 2 + rng.uniform(-0.02, 0.02) * size,
            (i + 0.5) * band + rng.uniform(-0.03, 0.03) * band,
        )
        vertices = blob(rng, centre, axes, rng.uniform(-0.06, 0.06), roughness)
        sections.append(np.clip(vertices, 0.015 * size, 0.985 * size))
    return sections


def _place(
    rng: np.random.Generator,
    available: npt.NDArray[np.bool_],
    major: float,
    ratio: float,
    roughness: float,
    margin: float,
    min_major: float,
) -> Vertices | None:
    """Try to fit a lesion (shrinking it from ``major`` down to ``min_major``)."""
    dist = ndimage.distance_transform_edt(available) * PLAN_DOWNSAMPLE
    rows, cols = available.shape
    for attempt in range(80):
        length = major * 0.92 ** (attempt // 8)
        if length < min_major:
            return None
        a, b = length / 2, length / 2 * ratio
        candidates = np.argwhere(dist >= b * (1 + roughness) + margin)
        if len(candidates) == 0:
            continue
        r, c = candidates[rng.integers(len(candidates))]
        centre = ((c + 0.5) * PLAN_DOWNSAMPLE, (r + 0.5) * PLAN_DOWNSAMPLE)
        vertices = blob(rng, centre, (a, b), rng.uniform(-0.5, 0.5), roughness)
        vr = np.clip((vertices[:, 1] / PLAN_DOWNSAMPLE).astype(int), 0, rows - 1)
        vc = np.clip((vertices[:, 0] / PLAN_DOWNSAMPLE).astype(int), 0, cols - 1)
        if (dist[vr, vc] >= margin).all():
            return vertices
    return None


def _claim(available: npt.NDArray[np.bool_], vertices: Vertices) -> None:
    """Remove a lesion and its surroundings (LESION_SEPARATION_PX) from ``available``."""
    shape = (available.shape[0], available.shape[1])
    lesion = fill_polygons([vertices], (0, 0), shape, PLAN_DOWNSAMPLE)
    near = ndimage.distance_transform_edt(~lesion) * PLAN_DOWNSAMPLE <= LESION_SEPARATION_PX
    available &= ~near


def plan_geometry(rng: np.random.Generator, size: int, tumour: bool, mpp: float) -> SlideGeometry:
    """Draw tissue sections and, for a tumour slide, lesions inside them.

    A tumour slide gets one large lesion (>= 1300 px; a 2.2-2.55 mm macro-metastasis on
    slides of 12000 px and more, else up to 60 % of the slide), possibly with an exclusion
    hole, more non-ITC lesions on larger slides, and two to four ITC-sized ones.

    Args:
        rng: Random generator (the plan is a pure function of its state and the arguments).
        size: Side of the square slide in level-0 pixels (>= 2048).
        tumour: Whether to place lesions.
        mpp: Microns per pixel, for the lesion summaries.

    Returns:
        The slide's geometry.

    Raises:
        ValueError: The slide is too small to hold a non-ITC lesion.
    """
    tissue = _tissue_sections(rng, size)
    geometry = SlideGeometry(size, tuple(tissue), (), ())
    if not tumour:
        return geometry
    available = geometry.tissue_raster()
    tumours: list[Vertices] = []
    exclusions: list[Vertices] = []
    small = size < 3000
    if size >= 12000:
        first = rng.uniform(*MACRO_MAJOR_PX)
    elif small:  # leave normal tissue and room for ITCs around the lesion
        first = rng.uniform(1.0, 1.1) * MIN_NON_ITC_MAJOR_PX
    else:
        first = max(MIN_NON_ITC_MAJOR_PX * 1.2, rng.uniform(0.35, 0.6) * size)
    ratio = (
        rng.uniform(0.5, 0.65)
        if small
        else rng.uniform(0.4, 0.55)
        if size >= 12000
        else (rng.uniform(0.45, 0.75))
    )
    big = _place(rng, available, first, ratio, 0.05 if small else 0.1, 80.0, MIN_NON_ITC_MAJOR_PX)
    if big is None:
        raise ValueError(f"a {size} px slide is too small for a {MIN_NON_ITC_MAJOR_PX} px lesion")
    tumours.append(big)
    _claim(available, big)
    minor = float(np.ptp(big @ np.array([[0.0], [1.0]]))) / 2  # rough half-height
    if minor >= 450 and rng.random() < 0.6:
        centre = big.mean(axis=0) + rng.uniform(-0.25, 0.25, 2) * minor
        radius = rng.uniform(0.15, 0.28) * minor
        exclusions.append(blob(rng, (centre[0], centre[1]), (radius, radius * 0.8), 0.0, 0.1))
    extra = int(size >= 4096) + int(size >= 8192) + int(size >= 16384)
    for _ in range(extra):
        major = rng.uniform(MIN_NON_ITC_MAJOR_PX, max(MIN_NON_ITC_MAJOR_PX, min(0.3 * size, 8000)))
        placed = _place(
            rng, available, major, rng.uniform(0.5, 0.85), 0.12, 100.0, MIN_NON_ITC_MAJOR_PX
        )
        if placed is not None:
            tumours.append(placed)
            _claim(available, placed)
    for _ in range(int(rng.integers(2, 5))):
        major = rng.uniform(*ITC_MAJOR_PX)
        placed = _place(rng, available, major, rng.uniform(0.6, 1.0), 0.12, 60.0, ITC_MAJOR_PX[0])
        if placed is not None:
            tumours.append(placed)
            _claim(available, placed)
    annotations = [Polygon(f"Annotation {i}", "_0", v) for i, v in enumerate(tumours)]
    annotations += [
        Polygon(f"Annotation {len(tumours) + i}", "_2", v) for i, v in enumerate(exclusions)
    ]
    lesions = tuple(
        LesionInfo(
            p.name,
            round(major_axis_px(p.vertices) * mpp, 1),
            major_axis_px(p.vertices) * mpp < ITC_MAJOR_UM,
        )
        for p in annotations
        if p.is_tumor
    )
    return SlideGeometry(size, tuple(tissue), tuple(annotations), lesions)
