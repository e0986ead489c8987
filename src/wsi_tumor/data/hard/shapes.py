"""Real CAMELYON16 lesion shapes: the committed table, size classes and rigid placement.

The table (``camelyon16_shapes.json`` beside this module, built by
:mod:`wsi_tumor.data.hard.build_shapes`, credit in ``README.md``) holds tumour polygons of
the CAMELYON16 training set as NCRF converted them, in level-0 pixels at 0.243 um/px,
relative to their centroid. The generator only rotates and translates them: sizes are the
real ones. Size classes follow CAMELYON16: isolated tumour cells (ITC) below 200 um,
micro-metastases from 200 um to 2 mm, macro-metastases above 2 mm (longest diameter).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

ITC_MAX_UM = 200.0
"""Lesions whose longest diameter is below this are isolated tumour cells."""
MACRO_MIN_UM = 2000.0
"""Lesions whose longest diameter is above this are macro-metastases."""
TABLE_NAME = "camelyon16_shapes.json"

LesionClass = Literal["itc", "micro", "macro"]
CLASSES: tuple[LesionClass, ...] = ("itc", "micro", "macro")
Vertices = npt.NDArray[np.float64]


def classify(major_um: float) -> LesionClass:
    """CAMELYON16 size class of a lesion from its longest diameter in microns."""
    if major_um < ITC_MAX_UM:
        return "itc"
    return "micro" if major_um <= MACRO_MIN_UM else "macro"


def _hull(vertices: Vertices) -> Vertices:
    from scipy.spatial import ConvexHull, QhullError

    try:
        return vertices[ConvexHull(vertices).vertices]
    except (QhullError, ValueError):
        return vertices


def feret_px(vertices: Vertices) -> float:
    """Longest distance between two vertices (the maximum Feret diameter), in pixels."""
    hull = _hull(np.asarray(vertices, np.float64))
    diff = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max())


def polygon_area_px(vertices: Vertices) -> float:
    """Shoelace area (absolute) in square pixels."""
    x, y = vertices[:, 0], vertices[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def rotate(vertices: Vertices, angle: float) -> Vertices:
    """Rotate (n, 2) (x, y) vertices by ``angle`` radians about the origin."""
    c, s = np.cos(angle), np.sin(angle)
    return np.asarray(vertices, np.float64) @ np.array([[c, s], [-s, c]])


@dataclass(frozen=True)
class LesionShape:
    """One real tumour polygon of the table.

    Attributes:
        source: CAMELYON16 slide it comes from (``Tumor_012``).
        name: Its annotation name there.
        lesion_class: ``itc``, ``micro`` or ``macro``.
        major_um: Longest diameter of ``vertices`` in microns.
        area_um2: Area in square microns.
        vertices: (n, 2) level-0 pixel offsets from the centroid.
        exclusions: Normal islands inside it, same frame.
    """

    source: str
    name: str
    lesion_class: LesionClass
    major_um: float
    area_um2: float
    vertices: Vertices
    exclusions: tuple[Vertices, ...]

    @property
    def key(self) -> str:
        """``source/name``: names the shape in dataset.json."""
        return f"{self.source}/{self.name}"

    @property
    def radius_px(self) -> float:
        """Largest distance of a vertex from the centroid."""
        return float(np.sqrt((self.vertices**2).sum(1)).max())


@dataclass(frozen=True)
class ShapeTable:
    """The committed table: shapes by class and the per-source-slide class counts."""

    mpp: float
    shapes: tuple[LesionShape, ...]
    profiles: tuple[tuple[str, int, int, int], ...]
    """(source slide, ITC count, micro count, macro count) over all its polygons."""

    def of_class(self, lesion_class: LesionClass) -> list[LesionShape]:
        """Shapes of one class, in table order."""
        return [s for s in self.shapes if s.lesion_class == lesion_class]


def _pairs(flat: list[int]) -> Vertices:
    return np.asarray(flat, np.float64).reshape(-1, 2)


def parse_table(document: dict[str, Any]) -> ShapeTable:
    """Turn the JSON document into a :class:`ShapeTable`."""
    shapes = tuple(
        LesionShape(
            source=str(e["source"]),
            name=str(e["name"]),
            lesion_class=classify(float(e["major_um"])),
            major_um=float(e["major_um"]),
            area_um2=float(e["area_um2"]),
            vertices=_pairs(e["vertices"]),
            exclusions=tuple(_pairs(h) for h in e["exclusions"]),
        )
        for e in document["lesions"]
    )
    profiles = tuple(
        (str(p["source"]), int(p["itc"]), int(p["micro"]), int(p["macro"]))
        for p in document["profiles"]
    )
    return ShapeTable(float(document["mpp"]), shapes, profiles)


@lru_cache(maxsize=1)
def load_table() -> ShapeTable:
    """The committed shape table (read once)."""
    text = resources.files("wsi_tumor.data.hard").joinpath(TABLE_NAME).read_text("utf-8")
    return parse_table(json.loads(text))
