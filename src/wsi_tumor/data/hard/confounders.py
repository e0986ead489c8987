"""Confounders of the hard preset: what they are and where they lie on a slide.

Tissue look-alikes (placed in normal tissue, away from lesions):

- ``lymphoid``: lymphocyte-dense regions, dark purple like tumour;
- ``germinal``: follicles with a germinal centre: a dark mantle of small lymphocytes around
  a pale centre of larger vesicular nuclei with nucleoli (the textbook false positive).

Artefacts (anywhere, lesions included):

- ``fold``: tissue folded over itself: a band where the light crosses the section twice
  (transmittance squared: darker and more saturated), inside the tissue;
- ``blur``: out-of-focus areas (Gaussian blur, soft-edged ellipse), on tumour slides often
  centred on a lesion;
- ``pen``: thick marker strokes (blue, green or black ink), from the glass onto the tissue.

``stain`` is not placed: it is the slide's centre (training or test centre, see
:mod:`wsi_tumor.data.hard.textures`).

Every slide draws all of them from its own random stream whatever the enabled set, so a
dataset generated with one confounder switched off differs from the full one only where
that confounder was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from wsi_tumor.data.geometry import PLAN_DOWNSAMPLE
from wsi_tumor.data.hard.plan import TissuePlan, blob, box_of, place_shape, um_to_px
from wsi_tumor.data.hard.rasters import Raster, Vertices, grow, raster_of, shrink

ConfounderKind = Literal["lymphoid", "germinal", "fold", "blur", "pen", "stain"]
CONFOUNDERS: tuple[ConfounderKind, ...] = ("lymphoid", "germinal", "fold", "blur", "pen", "stain")
"""Every confounder; a dataset enables a subset (all by default)."""
PLACED: tuple[ConfounderKind, ...] = ("lymphoid", "germinal", "fold", "blur", "pen")

INKS: dict[str, tuple[float, float, float]] = {
    "blue": (1.15, 0.55, 0.12),
    "green": (1.0, 0.25, 0.8),
    "black": (1.25, 1.2, 1.1),
}
"""Optical density of each ink per unit density (R, G, B)."""


@dataclass(frozen=True)
class Rates:
    """How often confounders occur (per slide or per mm^2 of tissue).

    Attributes:
        germinal_per_mm2: Expected follicles per mm^2 (at least one per slide).
        lymphoid_per_mm2: Expected lymphocyte-dense regions per mm^2 (at least one).
        fold: Probability of a fold.
        blur: Probability of an out-of-focus area.
        blur_on_lesion: Probability that a tumour slide's out-of-focus area covers a lesion.
        pen: Probability of a pen stroke.
    """

    germinal_per_mm2: float = 2.5
    lymphoid_per_mm2: float = 1.5
    fold: float = 0.5
    blur: float = 0.5
    blur_on_lesion: float = 0.7
    pen: float = 0.45


@dataclass(frozen=True)
class Confounder:
    """One placed confounder.

    Attributes:
        kind: What it is.
        box: (x0, y0, x1, y1) level-0 bounding box, inside the slide.
        outlines: Polygons the painter fills: ``germinal`` (mantle, centre), ``lymphoid``,
            ``fold`` and ``pen`` one each, ``blur`` its ellipse.
        params: Kind-specific values (blur sigma, ink colour and density, ...).
        over_tumour: Whether it overlaps a lesion's bounding box.
    """

    kind: ConfounderKind
    box: tuple[int, int, int, int]
    outlines: tuple[Vertices, ...]
    params: dict[str, Any] = field(default_factory=dict)
    over_tumour: bool = False

    def to_json(self) -> dict[str, Any]:
        """dataset.json entry (no outlines)."""
        return {
            "kind": self.kind,
            "box": list(self.box),
            "over_tumour": self.over_tumour,
            **self.params,
        }


def _overlaps(box: tuple[int, int, int, int], plan: TissuePlan) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in (p.box for p in plan.lesions)
    )


def _shape(raster: Raster) -> tuple[int, int]:
    return int(raster.shape[0]), int(raster.shape[1])


def _pick_point(rng: np.random.Generator, where: Raster) -> tuple[float, float] | None:
    cells = np.argwhere(where)
    if len(cells) == 0:
        return None
    r, c = cells[rng.integers(len(cells))]
    return (float(c) + rng.random()) * PLAN_DOWNSAMPLE, (float(r) + rng.random()) * PLAN_DOWNSAMPLE


def _curve_band(
    start: npt.NDArray[np.float64],
    end: npt.NDArray[np.float64],
    bend: float,
    width: float,
    taper: float,
) -> Vertices:
    """A curved band of ``width`` from ``start`` to ``end`` (ends tapered by ``taper``)."""
    t = np.linspace(-1.0, 1.0, 48)
    along = end - start
    length = float(np.hypot(*along))
    unit = along / max(length, 1e-9)
    normal = np.array([-unit[1], unit[0]])
    centre = (start + end) / 2
    line = centre + np.outer(t * length / 2, unit) + np.outer(bend * (1 - t**2), normal)
    tangent = np.gradient(line, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    side = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    half = width / 2 * (1 - taper * t**6)[:, None]
    return np.vstack([line + half * side, (line - half * side)[::-1]])


def _follicles(
    rng: np.random.Generator, plan: TissuePlan, free: Raster, expected: float, mpp: float
) -> list[Confounder]:
    count = int(np.clip(rng.poisson(expected), 1, 5))
    found = []
    for _ in range(count):
        radius = um_to_px(rng.uniform(90.0, 220.0), mpp)
        aspect = rng.uniform(0.75, 0.95)
        mantle = blob(rng, (0.0, 0.0), (radius, radius * aspect), rng.uniform(0, np.pi), 0.06)
        inner = rng.uniform(0.62, 0.78)
        offset = rng.uniform(-0.12, 0.12, 2) * radius
        centre = blob(
            rng,
            (float(offset[0]), float(offset[1])),
            (radius * inner, radius * aspect * inner),
            rng.uniform(0, np.pi),
            0.05,
        )
        spot = None
        for scale in (1.0, 0.8, 0.6):
            spot = place_shape(rng, ~free, mantle * scale, tries=2, angle=0.0)
            if spot is not None:
                mantle, centre = mantle * scale, centre * scale
                break
        if spot is None:
            continue
        shift = spot[1]
        outline = (np.round(mantle + shift, 1), np.round(centre + shift, 1))
        free &= ~grow(raster_of([outline[0]], _shape(free)), um_to_px(20.0, mpp))
        box = box_of(outline[0], plan.width, plan.height)
        found.append(
            Confounder(
                "germinal",
                box,
                outline,
                {"diameter_um": round(2 * radius * mpp * (1 + aspect) / 2, 1)},
            )
        )
    return found


def _lymphoid(
    rng: np.random.Generator, plan: TissuePlan, free: Raster, expected: float, mpp: float
) -> list[Confounder]:
    count = int(np.clip(rng.poisson(expected), 1, 4))
    found = []
    for _ in range(count):
        a = um_to_px(rng.uniform(70.0, 220.0), mpp)
        shape = blob(rng, (0.0, 0.0), (a, a * rng.uniform(0.5, 0.9)), 0.0, 0.18)
        spot = None
        for scale in (1.0, 0.75, 0.5):
            spot = place_shape(rng, ~free, shape * scale, tries=3)
            if spot is not None:
                shape = shape * scale
                break
        if spot is None:
            continue
        angle, shift = spot
        c, s = math.cos(angle), math.sin(angle)
        outline = np.round(shape @ np.array([[c, s], [-s, c]]) + shift, 1)
        free &= ~grow(raster_of([outline], _shape(free)), um_to_px(20.0, mpp))
        found.append(
            Confounder("lymphoid", box_of(outline, plan.width, plan.height), (outline,), {})
        )
    return found


def _fold(rng: np.random.Generator, plan: TissuePlan, tissue: Raster, mpp: float) -> Confounder:
    point = _pick_point(rng, shrink(tissue, um_to_px(60.0, mpp)) if tissue.any() else tissue)
    cx, cy = point if point is not None else (plan.width / 2, plan.height / 2)
    angle = rng.uniform(0, np.pi)
    length = um_to_px(rng.uniform(300.0, 1000.0), mpp)
    direction = np.array([math.cos(angle), math.sin(angle)])
    start = np.array([cx, cy]) - direction * length / 2
    end = np.array([cx, cy]) + direction * length / 2
    width = um_to_px(rng.uniform(25.0, 90.0), mpp)
    band = _curve_band(start, end, rng.uniform(-0.15, 0.15) * length, width, 0.9)
    band = np.round(band, 1)
    inside = raster_of([band], _shape(tissue)) & tissue
    if inside.any():
        rows, cols = np.nonzero(inside)
        box = (
            int(cols.min()) * PLAN_DOWNSAMPLE,
            int(rows.min()) * PLAN_DOWNSAMPLE,
            min(plan.width, (int(cols.max()) + 1) * PLAN_DOWNSAMPLE),
            min(plan.height, (int(rows.max()) + 1) * PLAN_DOWNSAMPLE),
        )
    else:
        box = box_of(band, plan.width, plan.height)
    return Confounder("fold", box, (band,), {"width_um": round(width * mpp, 1), "strength": 2.0})


def _blur(
    rng: np.random.Generator, plan: TissuePlan, tissue: Raster, rates: Rates, mpp: float
) -> Confounder:
    targets = [p for p in plan.lesions if p.lesion_class != "itc"]
    on_lesion = bool(targets) and rng.random() < rates.blur_on_lesion
    if on_lesion:
        x0, y0, x1, y1 = targets[int(rng.integers(len(targets)))].box
        cx = (x0 + x1) / 2 + rng.uniform(-0.2, 0.2) * (x1 - x0)
        cy = (y0 + y1) / 2 + rng.uniform(-0.2, 0.2) * (y1 - y0)
    else:
        point = _pick_point(rng, tissue)
        cx, cy = point if point is not None else (plan.width / 2, plan.height / 2)
    rx = um_to_px(rng.uniform(120.0, 380.0), mpp)
    ry = rx * rng.uniform(0.5, 1.0)
    angle = float(rng.uniform(0, np.pi))
    sigma = float(rng.uniform(3.0, 7.0))
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    u, v = rx * np.cos(t), ry * np.sin(t)
    ellipse = np.stack(
        [
            cx + u * math.cos(angle) - v * math.sin(angle),
            cy + u * math.sin(angle) + v * math.cos(angle),
        ],
        axis=1,
    )
    box = box_of(ellipse, plan.width, plan.height)
    return Confounder(
        "blur",
        box,
        (np.round(ellipse, 1),),
        {
            "sigma_px": round(sigma, 2),
            "centre": [round(cx, 1), round(cy, 1)],
            "radii": [round(rx, 1), round(ry, 1)],
            "angle": round(angle, 4),
        },
    )


def _pen(rng: np.random.Generator, plan: TissuePlan, tissue: Raster, mpp: float) -> Confounder:
    rim = tissue & ~shrink(tissue, 2 * PLAN_DOWNSAMPLE)
    point = _pick_point(rng, rim)
    ex, ey = point if point is not None else (plan.width / 2, plan.height / 2)
    rows, cols = np.nonzero(tissue) if tissue.any() else (np.array([0]), np.array([0]))
    centre = np.array([cols.mean() * PLAN_DOWNSAMPLE, rows.mean() * PLAN_DOWNSAMPLE])
    outward = np.array([ex, ey]) - centre
    outward /= max(float(np.hypot(*outward)), 1e-9)
    turn = rng.uniform(-0.6, 0.6)
    c, s = math.cos(turn), math.sin(turn)
    outward = np.array([c * outward[0] - s * outward[1], s * outward[0] + c * outward[1]])
    start = np.array([ex, ey]) + outward * um_to_px(rng.uniform(80.0, 200.0), mpp)
    end = np.array([ex, ey]) - outward * um_to_px(rng.uniform(150.0, 450.0), mpp)
    width = um_to_px(rng.uniform(45.0, 120.0), mpp)
    length = float(np.hypot(*(end - start)))
    band = _curve_band(start, end, rng.uniform(-0.2, 0.2) * length, width, 0.4)
    band[:, 0] = np.clip(band[:, 0], 0, plan.width)
    band[:, 1] = np.clip(band[:, 1], 0, plan.height)
    ink = ("blue", "green", "black")[int(rng.integers(3))]
    return Confounder(
        "pen",
        box_of(band, plan.width, plan.height),
        (np.round(band, 1),),
        {
            "ink": ink,
            "density": round(float(rng.uniform(0.7, 1.3)), 3),
            "width_um": round(width * mpp, 1),
        },
    )


def plan_confounders(
    rng: np.random.Generator,
    plan: TissuePlan,
    mpp: float,
    rates: Rates | None = None,
) -> list[Confounder]:
    """Place every confounder of one slide (all kinds, whatever is enabled later).

    Args:
        rng: The slide's confounder stream.
        plan: Its tissue and lesions.
        mpp: Microns per pixel.
        rates: Occurrence rates (defaults: :class:`Rates`).

    Returns:
        The confounders, follicles first.
    """
    rates = rates or Rates()
    tissue = plan.tissue_raster()
    free = shrink(tissue, um_to_px(25.0, mpp)) & ~grow(plan.tumour_raster(), um_to_px(60.0, mpp))
    tissue_mm2 = float(tissue.sum()) * (PLAN_DOWNSAMPLE * mpp / 1000) ** 2
    found = _follicles(rng, plan, free, rates.germinal_per_mm2 * tissue_mm2, mpp)
    found += _lymphoid(rng, plan, free, rates.lymphoid_per_mm2 * tissue_mm2, mpp)
    draws = rng.random(3)
    fold = _fold(rng, plan, tissue, mpp)
    blur = _blur(rng, plan, tissue, rates, mpp)
    pen = _pen(rng, plan, tissue, mpp)
    if draws[0] < rates.fold:
        found.append(fold)
    if draws[1] < rates.blur:
        found.append(blur)
    if draws[2] < rates.pen:
        found.append(pen)
    return [Confounder(c.kind, c.box, c.outlines, c.params, _overlaps(c.box, plan)) for c in found]
