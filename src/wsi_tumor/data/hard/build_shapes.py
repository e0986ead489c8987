"""Build the committed lesion-shape table from NCRF's CAMELYON16 annotation JSONs.

Run once (the table is committed; generation never needs the source)::

    python -m wsi_tumor.data.hard.build_shapes NCRF/jsons shapes.json

Reads every ``Tumor_*.json`` under the directory (NCRF's ``positive`` = tumour polygons,
``negative`` = normal islands cut out of them, level-0 pixels at 0.243 um/px), and keeps:

- ``profiles``: per source slide, how many ITC / micro / macro polygons it holds (all of
  them, before any selection): the real per-slide mix;
- ``lesions``: the polygons the generator places, simplified (Douglas-Peucker, tolerance
  :func:`tolerance_px`), as integer level-0 pixel offsets from the polygon's centroid, with
  their exclusions. Selection: size-stratified samples of :data:`MICRO_SAMPLE`
  micro-metastases and :data:`ITC_SAMPLE` ITCs, and the macro-metastases of at most
  :data:`MACRO_MAX_AREA_MM2` (larger ones cannot fit the compute budget of a 2-core
  benchmark). A polygon is dropped
  when simplification changes its class, or when the organisers' evaluation (75 um growth,
  level 5, ITC = ellipse major axis < 275 um) disagrees with the 200 um rule or splits it
  into several regions at any of :data:`CHECK_ANGLES`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from skimage.measure import approximate_polygon

from wsi_tumor.contract import DEFAULT_MPP
from wsi_tumor.data.hard.shapes import (
    ITC_MAX_UM,
    MACRO_MIN_UM,
    LesionClass,
    classify,
    feret_px,
    polygon_area_px,
    rotate,
)

TOLERANCE_FRACTION = 0.01
"""Douglas-Peucker tolerance as a fraction of the polygon's longest diameter, ..."""
TOLERANCE_PX = (3.0, 32.0)
"""... clipped to this range: 0.7-7.8 um, at most one level-5 pixel."""
ITC_SAMPLE = 250
"""ITC polygons kept (of 1461), every k-th in size order so the size spread is kept."""
MICRO_SAMPLE = 250
"""Micro-metastases kept (of 603), likewise."""
MACRO_MAX_AREA_MM2 = 2.0
"""Largest macro-metastasis kept, in mm^2 (20 of the 99 in the source)."""
CHECK_ANGLES = (0.0, 0.7, 1.6, 2.5)
"""Rotations (radians) at which the evaluation's reading of a polygon is checked."""
MIN_VERTICES = 3

Vertices = npt.NDArray[np.float64]


def tolerance_px(vertices: Vertices) -> float:
    """Simplification tolerance of a polygon (see :data:`TOLERANCE_FRACTION`)."""
    return float(np.clip(TOLERANCE_FRACTION * feret_px(vertices), *TOLERANCE_PX))


def _simplify(vertices: Vertices, tolerance: float) -> Vertices:
    closed = np.vstack([vertices, vertices[:1]])
    simple = approximate_polygon(closed, tolerance)[:-1]
    return np.asarray(simple if len(simple) >= MIN_VERTICES else vertices, dtype=np.float64)


def _centroid(vertices: Vertices) -> tuple[float, float]:
    x, y = vertices[:, 0], vertices[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    if abs(area) < 1e-9:
        return float(x.mean()), float(y.mean())
    cx = ((x + np.roll(x, -1)) * cross).sum() / (6 * area)
    cy = ((y + np.roll(y, -1)) * cross).sum() / (6 * area)
    return float(cx), float(cy)


def evaluation_agrees(vertices: Vertices, lesion_class: LesionClass, mpp: float) -> bool:
    """Whether the organisers' evaluation sees one region of the same ITC status.

    The polygon is rasterised at level 5 at each of :data:`CHECK_ANGLES`, grown by 75 um
    and labelled as :mod:`wsi_tumor.evaluation.masks` does.
    """
    from wsi_tumor.annotations.formats import Polygon
    from wsi_tumor.annotations.polygons import rasterize
    from wsi_tumor.evaluation.masks import evaluation_mask, itc_labels

    level, scale = 5, 32.0
    for angle in CHECK_ANGLES:
        turned = rotate(vertices, angle)
        turned = turned - turned.min(axis=0) + 20 * scale
        rows = math.ceil(turned[:, 1].max() / scale) + 20
        cols = math.ceil(turned[:, 0].max() / scale) + 20
        mask = rasterize([Polygon("p", "_0", turned)], (rows, cols), scale).astype(bool)
        labels = evaluation_mask(mask, level, mpp)
        if int(labels.max()) != 1:
            return False
        is_itc = bool(itc_labels(labels, level, mpp))
        if is_itc != (lesion_class == "itc"):
            return False
    return True


def _entry(
    source: str, name: str, vertices: Vertices, holes: list[Vertices], mpp: float
) -> dict[str, Any] | None:
    tolerance = tolerance_px(vertices)
    simple = _simplify(vertices, tolerance)
    original_class = classify(feret_px(vertices) * mpp)
    major_um = feret_px(simple) * mpp
    lesion_class = classify(major_um)
    if lesion_class != original_class or polygon_area_px(simple) <= 0:
        return None
    if lesion_class != "macro" and not evaluation_agrees(simple, lesion_class, mpp):
        return None
    cx, cy = _centroid(simple)
    offset = np.array([cx, cy])
    return {
        "source": source,
        "name": name,
        "class": lesion_class,
        "major_um": round(major_um, 1),
        "area_um2": round(polygon_area_px(simple) * mpp * mpp, 0),
        "vertices": np.round(simple - offset).astype(int).ravel().tolist(),
        "exclusions": [
            np.round(_simplify(h, tolerance) - offset).astype(int).ravel().tolist() for h in holes
        ],
    }


def _inside(hole: Vertices, outer: Vertices) -> bool:
    from skimage.measure import points_in_poly

    return bool(points_in_poly(hole, outer).mean() > 0.9)


def build_table(json_dir: Path, mpp: float = DEFAULT_MPP) -> dict[str, Any]:
    """Read NCRF's tumour JSONs under ``json_dir`` and return the table (module docstring)."""
    files = sorted(json_dir.rglob("Tumor_*.json"))
    if not files:
        raise FileNotFoundError(f"{json_dir}: no Tumor_*.json files")
    profiles: list[dict[str, Any]] = []
    candidates: list[dict[str, Any]] = []
    for path in files:
        document = json.loads(path.read_text())
        source = path.stem
        positives = [
            (str(p["name"]), np.asarray(p["vertices"], np.float64))
            for p in document["positive"]
            if len(p["vertices"]) >= MIN_VERTICES
        ]
        negatives = [
            np.asarray(p["vertices"], np.float64)
            for p in document["negative"]
            if len(p["vertices"]) >= MIN_VERTICES
        ]
        counts = {"itc": 0, "micro": 0, "macro": 0}
        for name, vertices in positives:
            major_um = feret_px(vertices) * mpp
            counts[classify(major_um)] += 1
            if classify(major_um) == "macro" and (
                polygon_area_px(vertices) * (mpp / 1000) ** 2 > MACRO_MAX_AREA_MM2
            ):
                continue
            holes = [n for n in negatives if _inside(n, vertices)] if negatives else []
            entry = _entry(source, name, vertices, holes, mpp)
            if entry is not None:
                candidates.append(entry)
        profiles.append({"source": source, "split": path.parent.name, **counts})
    keep = {id(c) for c in candidates if c["class"] == "macro"}
    for lesion_class, count in (("itc", ITC_SAMPLE), ("micro", MICRO_SAMPLE)):
        ranked = sorted(
            (c for c in candidates if c["class"] == lesion_class), key=lambda c: c["major_um"]
        )
        step = max(1.0, len(ranked) / count)
        keep |= {id(ranked[int(i * step)]) for i in range(min(count, len(ranked)))}
    lesions = [c for c in candidates if id(c) in keep]
    return {
        "description": "CAMELYON16 lesion shapes (tumour polygons) derived from NCRF's JSONs",
        "source": "https://github.com/baidu-research/NCRF jsons/{train,valid}/Tumor_*.json",
        "licence": "CAMELYON16 annotations: CC0 1.0",
        "mpp": mpp,
        "tolerance": {"fraction_of_major": TOLERANCE_FRACTION, "px_range": TOLERANCE_PX},
        "classes_um": {"itc_below": ITC_MAX_UM, "macro_above": MACRO_MIN_UM},
        "macro_max_area_mm2": MACRO_MAX_AREA_MM2,
        "profiles": profiles,
        "lesions": lesions,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wsi_tumor.data.hard.build_shapes JSON_DIR OUT``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_dir", type=Path, help="NCRF's jsons/ directory")
    parser.add_argument("out", type=Path, help="table to write (.json)")
    args = parser.parse_args(argv)
    table = build_table(args.json_dir)
    text = json.dumps(table, separators=(",", ":"))
    # one lesion per line keeps the committed file diffable
    text = text.replace('},{"source"', '},\n{"source"')
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
