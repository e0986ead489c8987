"""NCRF-style patch-centre lists (``slide_name,x,y``, level 0) for the synthetic slides.

Tumour centres lie inside non-ITC lesions, at least 48 px from their edge, so the centre
224 px patch is mostly tumour (ITC-sized lesions are smaller than a patch and are left
out). Normal centres lie in tissue at least 112 px from its edge and at least 192 px from
every lesion (ITCs included), in normal slides (60 %) and in the non-tumour tissue of
tumour slides (40 %). Every centre is at least 384 px from the slide border, so the
768 x 768 training region lies inside the slide.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from wsi_tumor.annotations.formats import Polygon
from wsi_tumor.annotations.polygons import contains
from wsi_tumor.contract import TRAIN_REGION
from wsi_tumor.data import layout
from wsi_tumor.data.geometry import PLAN_DOWNSAMPLE
from wsi_tumor.fileio import write_text

TUMOR_EDGE_PX = 48
NORMAL_TISSUE_EDGE_PX = 112
NORMAL_LESION_GAP_PX = 192
NORMAL_FROM_NORMAL_SLIDES = 0.6

CoordLine = tuple[str, int, int]


class PlannedSlide(Protocol):
    """What sampling needs of a planned slide (easy :class:`~wsi_tumor.data.geometry.SlideGeometry`
    or hard :class:`~wsi_tumor.data.hard.plan.TissuePlan`): rasters at ``PLAN_DOWNSAMPLE``."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def annotations(self) -> tuple[Polygon, ...]: ...
    def tissue_raster(self) -> npt.NDArray[np.bool_]: ...
    def tumour_raster(self, include_itc: bool = True) -> npt.NDArray[np.bool_]: ...


SlideEntry = tuple[str, str, PlannedSlide]


def _erode(mask: npt.NDArray[np.bool_], px: float) -> npt.NDArray[np.bool_]:
    result: npt.NDArray[np.bool_] = ndimage.distance_transform_edt(mask) * PLAN_DOWNSAMPLE > px
    return result


def _draw(
    rng: np.random.Generator,
    name: str,
    geometry: PlannedSlide,
    cells: npt.NDArray[np.bool_],
    count: int,
    want_tumour: bool,
) -> list[CoordLine]:
    """Sample ``count`` integer centres in ``cells`` whose tumour status is ``want_tumour``."""
    if count <= 0:
        return []
    border = TRAIN_REGION // 2
    rows, cols = np.nonzero(cells)
    if rows.size == 0:
        return []
    lines: list[CoordLine] = []
    for _ in range(20):
        need = count - len(lines)
        if need <= 0:
            break
        pick = rng.integers(0, rows.size, 2 * need)
        x = ((cols[pick] + rng.random(pick.size)) * PLAN_DOWNSAMPLE).astype(int)
        y = ((rows[pick] + rng.random(pick.size)) * PLAN_DOWNSAMPLE).astype(int)
        inside = (x >= border) & (y >= border)
        inside &= (x < geometry.width - border) & (y < geometry.height - border)
        points = np.stack([x, y], axis=1)[inside]
        status = (
            contains(geometry.annotations, points)
            if geometry.annotations
            else (np.zeros(len(points), dtype=bool))
        )
        good = points[status == want_tumour][:need]
        lines.extend((name, int(px), int(py)) for px, py in good)
    return lines


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)] if parts else []


def sample_slide_coords(
    slides: Sequence[SlideEntry], count: int, rng: np.random.Generator
) -> tuple[list[CoordLine], list[CoordLine]]:
    """Draw ``count`` tumour and ``count`` normal patch centres from the slides of a split.

    Args:
        slides: (name, label, geometry) of each slide of the split.
        count: Centres per list.
        rng: Random generator.

    Returns:
        (tumour lines, normal lines), each a list of (slide, x, y).
    """
    tumour_slides = [s for s in slides if s[1] == layout.TUMOR_LABEL]
    normal_slides = [s for s in slides if s[1] != layout.TUMOR_LABEL]
    tumour_lines: list[CoordLine] = []
    for (name, _, geometry), n in zip(
        tumour_slides, _split(count, len(tumour_slides)), strict=True
    ):
        lesions = geometry.tumour_raster(include_itc=False)
        cells = _erode(lesions, TUMOR_EDGE_PX)
        tumour_lines += _draw(rng, name, geometry, cells if cells.any() else lesions, n, True)
    if tumour_slides and normal_slides:
        from_normal = round(count * NORMAL_FROM_NORMAL_SLIDES)
    else:
        from_normal = count if normal_slides else 0
    shares = _split(from_normal, len(normal_slides)) + _split(
        count - from_normal, len(tumour_slides)
    )
    normal_lines: list[CoordLine] = []
    for (name, _, geometry), n in zip(normal_slides + tumour_slides, shares, strict=True):
        cells = _erode(geometry.tissue_raster(), NORMAL_TISSUE_EDGE_PX)
        if geometry.annotations:
            near = ~_erode(~geometry.tumour_raster(include_itc=True), NORMAL_LESION_GAP_PX)
            cells &= ~near
        normal_lines += _draw(rng, name, geometry, cells, n, False)
    return tumour_lines, normal_lines


def write_coords(path: str | Path, lines: Sequence[CoordLine]) -> None:
    """Write ``slide,x,y`` lines (no header) atomically."""
    write_text(path, "".join(f"{name},{x},{y}\n" for name, x, y in lines))
