"""What the slide page draws over the slide: the coloured map, candidates, ground truth.

Geometry (DESIGN: locations are level-0 (x, y)): map cell (row, col) covers the model's
pixels [col * 64, (col + 1) * 64) x [row * 64, (row + 1) * 64); the model's pixels are
``slide_px_per_view_px`` of the slide's level-0 pixels each (1 when the slide is at the
model's 0.243 um/px, 2 for a 20x slide at 0.486), so the map image spans
``cols * 64 * scale`` level-0 pixels from the slide's top-left corner. Candidates
(``<stem>.csv``) and annotations are in the slide's level-0 pixels already.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.client.heatmap import COLORMAP
from wsi_tumor.errors import WsiTumorError

log = logging.getLogger(__name__)

COLOUR_STOPS = 11
"""Colours of the colour scale sent to the page (a CSS gradient through them)."""
MASK_LEVELS = (5, 6, 4, 7, 3)
"""Levels of a ground-truth mask TIFF tried for its outlines, the first found is used."""


def map_scale(report: dict[str, Any]) -> float:
    """Slide level-0 pixels per model pixel, from the report's resolution (1 when absent)."""
    resolution = report.get("resolution") or {}
    value = resolution.get("slide_px_per_view_px", 1.0)
    return float(value) if isinstance(value, int | float) and value > 0 else 1.0


def map_geometry(report: dict[str, Any], shape: tuple[int, int]) -> dict[str, float]:
    """Level-0 rectangle the map image covers, and the side of one cell, in slide pixels.

    Args:
        report: The slide's report (its ``resolution``).
        shape: (rows, cols) of the map.
    """
    cell = contract.PATCH_STRIDE * map_scale(report)
    rows, cols = shape
    return {"x": 0.0, "y": 0.0, "width": cols * cell, "height": rows * cell, "cell": cell}


def colour_stops(stops: int = COLOUR_STOPS) -> list[str]:
    """``#rrggbb`` colours of the map's colour scale from probability 0 to 1."""
    from matplotlib import colormaps

    table = colormaps[COLORMAP](np.linspace(0.0, 1.0, stops))[:, :3]
    return ["#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in rgb)) for rgb in table]


def render_map(
    prob_map: npt.NDArray[np.floating[Any]],
    tissue: npt.NDArray[np.bool_] | None,
    threshold: float = 0.0,
) -> npt.NDArray[np.uint8]:
    """RGBA (rows, cols, 4) of the map: the colour scale, opaque on tissue cells whose
    probability is at least ``threshold``, transparent elsewhere.

    Args:
        prob_map: (rows, cols) probabilities.
        tissue: (rows, cols) tissue mask, or None (every cell counts as tissue).
        threshold: Cells below it are transparent.
    """
    from matplotlib import colormaps

    levels = np.rint(np.clip(np.nan_to_num(prob_map), 0.0, 1.0) * 255.0).astype(np.uint8)
    table = (colormaps[COLORMAP](np.linspace(0.0, 1.0, 256)) * 255.0).round().astype(np.uint8)
    rgba = table[levels]
    shown = prob_map >= threshold
    if tissue is not None:
        shown &= tissue
    rgba[..., 3] = np.where(shown, 255, 0).astype(np.uint8)
    return rgba


def png_bytes(image: npt.NDArray[np.uint8]) -> bytes:
    """PNG bytes of a uint8 (H, W), (H, W, 3) or (H, W, 4) image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def read_tissue(path: Path | None, shape: tuple[int, int]) -> npt.NDArray[np.bool_] | None:
    """The tissue mask PNG as booleans, or None when absent or of another shape."""
    if path is None:
        return None
    from PIL import Image

    try:
        with Image.open(path) as image:
            mask = np.asarray(image.convert("L")) > 0
    except OSError as exc:
        log.warning("%s: cannot read the tissue mask (%s)", path, exc)
        return None
    return mask if mask.shape == shape else None


def read_candidates(path: Path | None) -> list[list[float]]:
    """``[prob, x, y]`` of the candidates CSV, most probable first (empty when unreadable)."""
    if path is None:
        return []
    from wsi_tumor.evaluation.nms import read_detections

    try:
        detections = read_detections(path)
    except WsiTumorError as exc:
        log.warning("%s", exc)
        return []
    order = np.argsort(-detections[:, 0], kind="stable")
    return [[round(float(p), 4), float(x), float(y)] for p, x, y in detections[order]]


def find_annotations(folder: Path, name: str) -> Path | None:
    """The ground truth of slide ``name`` in ``folder``: ``<name>_mask.tif`` (any case of
    ``mask``), ``<name>.xml`` (ASAP) or ``<name>.json`` (NCRF), in that order; None."""
    from wsi_tumor.evaluation.groundtruth import find_ground_truth

    found = find_ground_truth(folder, name)
    if found.path is not None:
        return found.path
    ncrf = folder / f"{name}.json"
    return ncrf if ncrf.is_file() else None


def outlines(path: Path) -> list[dict[str, Any]]:
    """Ground-truth outlines in level-0 pixels: ``{"group", "tumour", "points"}`` each.

    XML/JSON polygons come as annotated (exclusions flagged ``tumour: false``); a mask
    TIFF is traced at a coarse level (:data:`MASK_LEVELS`) with scikit-image's
    ``find_contours``.

    Raises:
        AnnotationError, EvaluationError: the file cannot be read.
    """
    if path.suffix.lower() in (".tif", ".tiff"):
        return _mask_outlines(path)
    from wsi_tumor.annotations.formats import read_annotations

    return [
        {
            "group": polygon.group,
            "tumour": not polygon.is_exclusion,
            "points": [[round(x, 1), round(y, 1)] for x, y in polygon.vertices.tolist()],
        }
        for polygon in read_annotations(path)
    ]


def _mask_outlines(path: Path) -> list[dict[str, Any]]:
    from skimage.measure import find_contours

    from wsi_tumor.errors import EvaluationError
    from wsi_tumor.evaluation.masks import binarise_mask, read_mask_level

    for level in MASK_LEVELS:
        try:
            mask = binarise_mask(read_mask_level(path, level), source=str(path))
        except EvaluationError as exc:
            if "has no level" in str(exc):
                continue
            raise
        factor = 2**level
        padded = np.pad(mask.astype(np.float32), 1)  # closes contours at the border
        return [
            {
                "group": "mask",
                "tumour": True,
                "points": [
                    [round((col - 1 + 0.5) * factor, 1), round((row - 1 + 0.5) * factor, 1)]
                    for row, col in contour
                ],
            }
            for contour in find_contours(padded, 0.5)
            if len(contour) >= 3
        ]
    raise EvaluationError(f"{path}: mask has none of the levels {', '.join(map(str, MASK_LEVELS))}")
