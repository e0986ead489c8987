"""Where things lie on a hard slide: tissue around real lesions, then the slide's extent.

Planning happens on rasters at downsample :data:`PLAN_DOWNSAMPLE` (16). A tumour slide's biggest
lesion (a macro-metastasis, or the largest micro-metastasis) is laid along the long axis
of the main tissue section; a macro-metastasis also grows the section around it (a node
largely replaced by tumour), by a margin of normal tissue. The other lesions are placed
anywhere in the remaining tissue where their whole (rotated) outline fits at least
:data:`EDGE_MARGIN_UM` inside the tissue and :data:`LESION_GAP_UM` from every other lesion,
found for all positions at once by an FFT correlation of the lesion's footprint with the
forbidden area. Shapes are only rotated and translated: sizes are the real ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from wsi_tumor.annotations.formats import Polygon
from wsi_tumor.annotations.polygons import fill_polygons
from wsi_tumor.data import geometry
from wsi_tumor.data.geometry import PLAN_DOWNSAMPLE
from wsi_tumor.data.hard.rasters import (
    Raster,
    Vertices,
    fit_positions,
    grow,
    outlines,
    raster_of,
    shrink,
)
from wsi_tumor.data.hard.shapes import LesionClass, LesionShape, feret_px, rotate

log = logging.getLogger(__name__)

EDGE_MARGIN_UM = 30.0
"""Lesions stay this far inside the tissue."""
LESION_GAP_UM = 120.0
"""Gap between lesions: more than the evaluation's 75 um growth, so they stay apart."""
ROOM_PER_LESION = 1.5
"""A section grows by this many times the area of the lesions it must also hold."""
MACRO_NORMAL_SHARE = 0.5
"""Normal tissue beside a macro-metastasis, as a share of the budget's section area."""
SLIDE_MARGIN_PX = 704
"""Glass around the tissue's bounding box (more than half a 768 px training region)."""
SLIDE_ROUND_PX = 64
"""Slide sides are multiples of this (one mask cell)."""


@dataclass(frozen=True)
class Budget:
    """How much tissue and which lesions a slide of one split may hold.

    Attributes:
        tissue_mm2: Area of the main tissue section before a macro-metastasis grows it.
        macro_max_mm2: Largest macro-metastasis (area) drawn.
        micro_max_mm2: Largest micro-metastasis (area) drawn.
        max_micro: Most micro-metastases per slide (the source slide's count is capped).
        max_itc: Most ITCs per slide.
    """

    tissue_mm2: float
    macro_max_mm2: float
    micro_max_mm2: float
    max_micro: int
    max_itc: int


@dataclass(frozen=True)
class PlacedLesion:
    """A real shape placed on the slide.

    Attributes:
        name: Its tumour annotation's name.
        shape: ``source/name`` of the table entry.
        lesion_class: ``itc``, ``micro`` or ``macro``.
        major_um: Longest diameter (after placement: rotation keeps it).
        area_um2: Area.
        box: (x0, y0, x1, y1) level-0 bounding box.
    """

    name: str
    shape: str
    lesion_class: LesionClass
    major_um: float
    area_um2: float
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class TissuePlan:
    """Tissue and lesions of one slide, in slide coordinates (level-0 px).

    Attributes:
        width: Slide width.
        height: Slide height.
        tissue: Tissue section outlines.
        annotations: Tumour (``_0``) and exclusion (``_2``) polygons.
        lesions: One entry per tumour polygon.
    """

    width: int
    height: int
    tissue: tuple[Vertices, ...]
    annotations: tuple[Polygon, ...]
    lesions: tuple[PlacedLesion, ...]

    def plan_shape(self) -> tuple[int, int]:
        """(rows, cols) of the planning rasters."""
        return math.ceil(self.height / PLAN_DOWNSAMPLE), math.ceil(self.width / PLAN_DOWNSAMPLE)

    def tissue_raster(self) -> Raster:
        """Tissue at the planning downsample."""
        return fill_polygons(self.tissue, (0, 0), self.plan_shape(), PLAN_DOWNSAMPLE)

    def tumour_raster(self, include_itc: bool = True) -> Raster:
        """Tumour polygons (exclusions not cut out) at the planning downsample."""
        keep = {p.name for p in self.lesions if include_itc or p.lesion_class != "itc"}
        return fill_polygons(
            [p.vertices for p in self.annotations if p.is_tumor and p.name in keep],
            (0, 0),
            self.plan_shape(),
            PLAN_DOWNSAMPLE,
        )


def um_to_px(um: float, mpp: float) -> float:
    """Microns to level-0 pixels."""
    return um / mpp


blob = partial(geometry.blob, max_vertices=400, decimals=None)
"""The easy preset's irregular ellipse, with finer outlines for the larger hard sections."""


def principal_angle(vertices: Vertices) -> float:
    """Orientation (radians) of the long axis of a vertex cloud."""
    centred = vertices - vertices.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    major = vectors[:, -1]
    return float(math.atan2(major[1], major[0]))


def place_shape(
    rng: np.random.Generator,
    forbidden: Raster,
    vertices: Vertices,
    tries: int = 6,
    angle: float | None = None,
) -> tuple[float, npt.NDArray[np.float64]] | None:
    """Find a rotation and translation that puts ``vertices`` entirely in allowed pixels.

    Args:
        rng: Random generator.
        forbidden: Planning raster, True where the shape may not lie.
        vertices: Outline centred on the origin (level-0 px).
        tries: Random rotations to try (one when ``angle`` is given).
        angle: Fixed rotation, or None for random ones.

    Returns:
        (angle, translation (x, y)) or None when it fits nowhere.
    """
    for _ in range(1 if angle is not None else tries):
        turn = float(rng.uniform(0, 2 * np.pi)) if angle is None else angle
        turned = rotate(vertices, turn)
        col0 = math.floor(turned[:, 0].min() / PLAN_DOWNSAMPLE) - 1
        row0 = math.floor(turned[:, 1].min() / PLAN_DOWNSAMPLE) - 1
        shape = (
            math.ceil(turned[:, 1].max() / PLAN_DOWNSAMPLE) - row0 + 2,
            math.ceil(turned[:, 0].max() / PLAN_DOWNSAMPLE) - col0 + 2,
        )
        footprint = fill_polygons([turned], (col0, row0), shape, PLAN_DOWNSAMPLE)
        if not footprint.any():  # smaller than a planning pixel: use the centre pixel
            footprint[-row0, -col0] = True
        positions = fit_positions(forbidden, footprint)
        if len(positions):
            r, c = positions[rng.integers(len(positions))]
            offset = np.array([c - col0, r - row0], np.float64) * PLAN_DOWNSAMPLE
            return turn, offset
    return None


def box_of(vertices: Vertices, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1) bounding box clipped to the slide."""
    x0 = int(np.clip(math.floor(vertices[:, 0].min()), 0, width))
    y0 = int(np.clip(math.floor(vertices[:, 1].min()), 0, height))
    x1 = int(np.clip(math.ceil(vertices[:, 0].max()), 0, width))
    y1 = int(np.clip(math.ceil(vertices[:, 1].max()), 0, height))
    return x0, y0, x1, y1


@dataclass
class _Placed:
    shape: LesionShape
    vertices: Vertices
    holes: list[Vertices]


def _transform(shape: LesionShape, angle: float, shift: npt.NDArray[np.float64]) -> _Placed:
    return _Placed(
        shape,
        np.round(rotate(shape.vertices, angle) + shift, 2),
        [np.round(rotate(h, angle) + shift, 2) for h in shape.exclusions],
    )


def _sections(
    rng: np.random.Generator, a: float, b: float, theta: float, mpp: float
) -> list[Vertices]:
    """The main section (centred on the origin) and, sometimes, a small one beside it."""
    sections = [blob(rng, (0.0, 0.0), (a, b), theta, 0.08)]
    if rng.random() < 0.35:
        a2 = a * rng.uniform(0.25, 0.4)
        b2 = a2 * rng.uniform(0.5, 0.8)
        side = 1 if rng.random() < 0.5 else -1
        distance = b + b2 + um_to_px(rng.uniform(120.0, 300.0), mpp)
        normal = np.array([-math.sin(theta), math.cos(theta)])
        along = np.array([math.cos(theta), math.sin(theta)]) * rng.uniform(-0.5, 0.5) * a
        offset = side * distance * normal + along
        sections.append(blob(rng, (float(offset[0]), float(offset[1])), (a2, b2), theta, 0.1))
    return sections


def plan_tissue(
    rng: np.random.Generator,
    shapes: Sequence[LesionShape],
    budget: Budget,
    mpp: float,
) -> TissuePlan:
    """Tissue sections and placed lesions of one slide.

    The main section starts at the budget's area and grows (in steps of 12 %) until the
    tissue left beside the lead lesion is at least the budget's area (a share of it next
    to a macro-metastasis) plus :data:`ROOM_PER_LESION` times the other lesions' areas.

    Args:
        rng: Random generator (the plan is a pure function of its state and the arguments).
        shapes: Lesions to place, biggest first (empty for a normal slide). The first one
            is laid along the main section; one that fits nowhere is left out.
        budget: The split's sizes.
        mpp: Microns per pixel.

    Returns:
        The plan in slide coordinates.
    """
    base_px = budget.tissue_mm2 * 1e6 / mpp**2 * rng.uniform(0.8, 1.2)
    others_px = ROOM_PER_LESION * sum(s.area_um2 for s in shapes[1:]) / mpp**2
    aspect = rng.uniform(0.45, 0.8)
    theta = float(rng.uniform(-0.35, 0.35))
    edge = um_to_px(EDGE_MARGIN_UM, mpp)
    gap = um_to_px(LESION_GAP_UM, mpp)
    lead: _Placed | None = None
    macro_margin = 0.0
    min_a = min_b = 0.0
    normal_px = base_px + others_px
    if shapes:
        turn = theta - principal_angle(shapes[0].vertices) + (math.pi if rng.random() < 0.5 else 0)
        local = rotate(rotate(shapes[0].vertices, turn), -theta)  # in the section's frame
        half_x, half_y = (float(v) for v in np.abs(local).max(axis=0))
        if shapes[0].lesion_class == "macro":  # tissue hugs it, plus a normal section
            macro_margin = um_to_px(rng.uniform(50.0, 150.0), mpp)
            normal_px = MACRO_NORMAL_SHARE * base_px + others_px
            shift = rotate(np.array([[rng.uniform(-0.25, 0.25) * half_x, 0.0]]), theta)[0]
        else:  # the section holds it with room to spare
            min_a = 1.15 * (half_x + edge) + gap
            min_b = 1.15 * (half_y + edge) + gap
            shift = np.zeros(2)
        lead = _transform(shapes[0], turn, shift)
    section_rng = np.random.default_rng(rng.integers(2**63))
    section_state = section_rng.bit_generator.state
    a = math.sqrt(base_px / (math.pi * aspect))
    for _ in range(12):
        b = max(a * aspect, min_b)
        a = max(a, min_a)
        section_rng.bit_generator.state = section_state  # same outline, only scaled
        sections = _sections(section_rng, a, b, theta, mpp)
        points = np.vstack([*sections, lead.vertices] if lead is not None else sections)
        pad = macro_margin + 2 * PLAN_DOWNSAMPLE + SLIDE_MARGIN_PX
        origin = points.min(axis=0) - pad
        extent = points.max(axis=0) + pad - origin
        shape = (math.ceil(extent[1] / PLAN_DOWNSAMPLE), math.ceil(extent[0] / PLAN_DOWNSAMPLE))
        tissue = raster_of([s - origin for s in sections], shape)
        taken = np.zeros(shape, bool)
        if lead is not None:
            lesion = raster_of([lead.vertices - origin], shape)
            if macro_margin:
                tissue |= grow(lesion, macro_margin)
            taken = grow(lesion, edge)
        if float((tissue & ~taken).sum()) * PLAN_DOWNSAMPLE**2 >= normal_px:
            break
        a *= 1.12
    tissue_outlines = outlines(tissue, min_area_px=(200 / mpp) ** 2)
    tissue = raster_of(tissue_outlines, shape)
    forbidden = ~shrink(tissue, edge)
    rest = list(shapes[1:])
    placed: list[_Placed] = []
    if lead is not None:
        lead = _Placed(lead.shape, lead.vertices - origin, [h - origin for h in lead.holes])
        lesion = raster_of([lead.vertices], shape)
        if (lesion & forbidden).any():  # a section too tight for the lead: place it freely
            rest.insert(0, lead.shape)
        else:
            placed.append(lead)
            forbidden |= grow(lesion, gap)
    for item in rest:
        found = place_shape(rng, forbidden, item.vertices, tries=10)
        if found is None:
            log.debug("%s (%.0f um) fits nowhere: left out", item.key, item.major_um)
            continue
        angle, shift = found
        done = _transform(item, angle, shift)
        placed.append(done)
        forbidden |= grow(raster_of([done.vertices], shape), gap)
    return _finish(tissue_outlines, placed, mpp)


def _finish(tissue: list[Vertices], placed: list[_Placed], mpp: float) -> TissuePlan:
    """Crop the canvas to the tissue plus glass and name the annotations."""
    points = np.vstack(tissue)
    low = np.floor(points.min(axis=0)) - SLIDE_MARGIN_PX
    high = np.ceil(points.max(axis=0)) + SLIDE_MARGIN_PX
    width = int(math.ceil((high[0] - low[0]) / SLIDE_ROUND_PX) * SLIDE_ROUND_PX)
    height = int(math.ceil((high[1] - low[1]) / SLIDE_ROUND_PX) * SLIDE_ROUND_PX)
    tissue = [np.round(t - low, 1) for t in tissue]
    tumours: list[Polygon] = []
    exclusions: list[Polygon] = []
    lesions: list[PlacedLesion] = []
    for item in placed:
        vertices = np.round(item.vertices - low, 2)
        name = f"Annotation {len(tumours)}"
        tumours.append(Polygon(name, "_0", vertices))
        exclusions += [Polygon("", "_2", np.round(h - low, 2)) for h in item.holes]
        lesions.append(
            PlacedLesion(
                name=name,
                shape=item.shape.key,
                lesion_class=item.shape.lesion_class,
                major_um=round(feret_px(vertices) * mpp, 1),
                area_um2=item.shape.area_um2,
                box=box_of(vertices, width, height),
            )
        )
    exclusions = [
        Polygon(f"Annotation {len(tumours) + i}", "_2", p.vertices)
        for i, p in enumerate(exclusions)
    ]
    return TissuePlan(width, height, tuple(tissue), (*tumours, *exclusions), tuple(lesions))
