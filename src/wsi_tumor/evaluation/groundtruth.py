"""Finding and loading each slide's ground truth: mask TIFF, ASAP XML, or none (normal).

Directory convention (the organisers'): ``<slide>_mask.tif`` (any case of ``mask``) or
``<slide>.xml`` marks a tumour slide; a slide with neither is normal. XML needs the slide's
level-0 size, read from ``<images>/<slide>.tif``; the microns per pixel come from that slide
when it says, else 0.243.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from wsi_tumor.contract import DEFAULT_MPP
from wsi_tumor.errors import EvaluationError, WsiTumorError
from wsi_tumor.evaluation.masks import binarise_mask, read_mask_level
from wsi_tumor.slide import SLIDE_SUFFIXES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroundTruth:
    """Where one slide's ground truth comes from.

    Attributes:
        slide: Slide name.
        kind: ``"mask"``, ``"xml"`` or ``"normal"``.
        path: Mask or XML file; None for a normal slide.
    """

    slide: str
    kind: Literal["mask", "xml", "normal"]
    path: Path | None


def find_ground_truth(gt_dir: str | Path, slide: str) -> GroundTruth:
    """Look up ``<slide>_mask.tif`` / ``<slide>_Mask.tif`` then ``<slide>.xml`` in ``gt_dir``.

    Args:
        gt_dir: Ground-truth directory.
        slide: Slide name (detections file stem).

    Returns:
        The slide's :class:`GroundTruth`; kind ``"normal"`` when neither file exists.
    """
    gt_dir = Path(gt_dir)
    wanted_masks = {f"{slide}_mask.tif".lower(), f"{slide}_mask.tiff".lower()}
    xml_name = f"{slide}.xml".lower()
    masks, xmls = [], []
    for entry in sorted(gt_dir.iterdir()):
        low = entry.name.lower()
        if low in wanted_masks:
            masks.append(entry)
        elif low == xml_name:
            xmls.append(entry)
    if masks:
        if xmls:
            log.info("%s: using mask %s rather than %s", slide, masks[0].name, xmls[0].name)
        return GroundTruth(slide, "mask", masks[0])
    if xmls:
        return GroundTruth(slide, "xml", xmls[0])
    return GroundTruth(slide, "normal", None)


def find_slide_image(images_dir: str | Path, slide: str) -> Path | None:
    """Return ``<images_dir>/<slide><ext>`` for the first existing extension, else None."""
    for suffix in SLIDE_SUFFIXES:
        candidate = Path(images_dir) / f"{slide}{suffix}"
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class SlideGeometry:
    """Level-0 size and resolution of a slide.

    Attributes:
        size: Level-0 (w, h) in pixels, or None when unknown.
        mpp: Level-0 microns per pixel used for the mask formulas.
        mpp_source: ``"slide"``, ``"default"`` or ``"override"``.
    """

    size: tuple[int, int] | None
    mpp: float
    mpp_source: str


def slide_geometry(
    images_dir: str | Path | None, slide: str, mpp_override: float | None = None
) -> SlideGeometry:
    """Level-0 size and mpp of ``slide`` from the readers, with the 0.243 fallback.

    Args:
        images_dir: Directory of slide images, or None.
        slide: Slide name.
        mpp_override: Microns per pixel that win over the slide's own.

    Returns:
        The :class:`SlideGeometry`.

    Raises:
        EvaluationError: The slide image exists but cannot be opened.
    """
    size: tuple[int, int] | None = None
    slide_mpp: float | None = None
    path = find_slide_image(images_dir, slide) if images_dir is not None else None
    if path is not None:
        from wsi_tumor.slide import open_slide  # readers are heavy; import on demand

        try:
            with open_slide(path) as reader:
                w, h = reader.level_dimensions[0]
                size = (int(w), int(h))
                try:
                    mpp_x, mpp_y = reader.mpp
                    if abs(mpp_x - mpp_y) > 0.01 * max(mpp_x, mpp_y):
                        log.warning("%s: mpp x %.4f != y %.4f; using x", path, mpp_x, mpp_y)
                    slide_mpp = float(mpp_x)
                except WsiTumorError as exc:
                    log.info("%s: no resolution (%s); using %.3f um/px", path, exc, DEFAULT_MPP)
        except WsiTumorError as exc:
            raise EvaluationError(f"{path}: cannot open slide for its geometry: {exc}") from exc
    if mpp_override is not None:
        return SlideGeometry(size, float(mpp_override), "override")
    if slide_mpp is not None and math.isfinite(slide_mpp) and slide_mpp > 0:
        return SlideGeometry(size, slide_mpp, "slide")
    return SlideGeometry(size, DEFAULT_MPP, "default")


def load_tumour_mask(
    gt: GroundTruth, level: int, geometry: SlideGeometry
) -> npt.NDArray[np.bool_] | None:
    """Boolean tumour mask of one slide at ``level``, or None for a normal slide.

    Args:
        gt: Where the ground truth is.
        level: Evaluation level (downsample ``2**level``).
        geometry: Slide size (needed for XML) and mpp.

    Returns:
        (rows, cols) boolean tumour mask, or None.

    Raises:
        EvaluationError: The mask lacks the level, has unusable values, or an XML slide has
            no image to take its size from.
    """
    if gt.kind == "normal" or gt.path is None:
        return None
    if gt.kind == "mask":
        return binarise_mask(read_mask_level(gt.path, level), source=str(gt.path))
    if geometry.size is None:
        raise EvaluationError(
            f"{gt.path}: XML ground truth needs the slide's level-0 size; pass --images DIR "
            f"holding {gt.slide}.tif (tried {', '.join(SLIDE_SUFFIXES)})"
        )
    from wsi_tumor.annotations.formats import read_asap_xml
    from wsi_tumor.annotations.polygons import rasterize

    try:
        polygons = read_asap_xml(gt.path)
    except WsiTumorError as exc:
        raise EvaluationError(f"{gt.path}: cannot read annotations: {exc}") from exc
    w, h = geometry.size
    factor = 2**level
    shape = (math.ceil(h / factor), math.ceil(w / factor))
    raster = rasterize(polygons, shape=shape, downsample=float(factor))
    return binarise_mask(raster, source=str(gt.path))
