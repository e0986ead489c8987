"""Hard-negative mining: high-scoring cells outside the tumour, as extra patch-centre lists.

One round, as NCRF and the CAMELYON16 winners did: a first model's probability maps of the
training slides (``wsi-infer`` outputs) are searched for local maxima above a threshold that
lie outside every tumour polygon by more than a margin (every high cell of a normal slide);
the highest of them, at most a share of the normal centres, are written as an NCRF-style
``slide_name,x,y`` list (level-0 pixels, no header) that ``wsi-labels`` labels like any other
list, so the mined regions enter the label CSV with the grid labels their polygons give (0
for every cell outside the tumour), in the layout MONAI's training reads.

Where the dataset has the synthetic generator's ``dataset.json``, each mined centre is also
attributed to the confounders whose boxes hold it (a report only: mining never reads it).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.data import layout
from wsi_tumor.errors import OutputError
from wsi_tumor.fileio import atomic_path, write_json

log = logging.getLogger(__name__)

NO_CONFOUNDER: Final = "none"
"""Attribution of a mined centre that lies in no confounder's box."""


@dataclass(frozen=True)
class MiningConfig:
    """How cells are chosen.

    Attributes:
        threshold: A cell is a candidate when its probability exceeds this.
        margin_um: Cells within this distance of a tumour polygon are never mined (75 um,
            the organisers' FROC growth: a candidate there is not a false positive).
        min_distance_cells: Mined centres are local maxima at least this many map cells
            apart (6 cells = 384 px at level 0, half a training region).
        max_share: At most this share of the normal training centres is mined.
    """

    threshold: float = 0.5
    margin_um: float = 75.0
    min_distance_cells: int = 6
    max_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.margin_um < 0 or self.min_distance_cells < 1 or not 0 < self.max_share <= 10:
            raise ValueError(f"invalid mining settings: {self}")


@dataclass(frozen=True)
class MinedCentre:
    """One mined patch centre (level-0 pixels of its slide) and why it was taken."""

    slide: str
    x: int
    y: int
    probability: float
    confounders: tuple[str, ...] = ()


def _tumour_cells(
    annotations: Path | None, slide: str, shape: tuple[int, int], cell_px: float, margin: int
) -> npt.NDArray[np.bool_]:
    """Cells of the map grid inside a tumour polygon, grown by ``margin`` cells."""
    from wsi_tumor.annotations.formats import read_annotations
    from wsi_tumor.annotations.polygons import rasterize
    from wsi_tumor.training.labels import ANNOTATION_SUFFIXES, find_file

    found = find_file(annotations, slide, ANNOTATION_SUFFIXES) if annotations else None
    if found is None:
        return np.zeros(shape, dtype=bool)
    tumour = rasterize(read_annotations(found), shape=shape, downsample=cell_px).astype(bool)
    if margin > 0 and tumour.any():
        from scipy.ndimage import binary_dilation
        from skimage.morphology import disk

        tumour = binary_dilation(tumour, structure=disk(margin))
    return tumour


def read_map(maps: Path, slide: str) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
    """A slide's probability map and report from a ``wsi-infer`` output directory.

    Raises:
        OutputError: the slide's outputs are missing or incomplete (name the file).
    """
    from wsi_tumor.client.outputs import SlideOutputs

    outputs = SlideOutputs(maps, slide)
    problem = outputs.problem()
    if problem is not None:
        raise OutputError(f"{maps / slide}: no complete wsi-infer outputs: {problem}")
    report = json.loads(outputs.report.read_text())
    return np.load(outputs.prob_map, allow_pickle=False), report


def mine_slide(
    prob_map: npt.NDArray[np.float32],
    tumour: npt.NDArray[np.bool_],
    config: MiningConfig,
) -> list[tuple[int, int, float]]:
    """Local maxima above the threshold outside ``tumour``: (row, col, p), highest first."""
    from skimage.feature import peak_local_max

    if prob_map.shape != tumour.shape:
        raise ValueError(f"map {prob_map.shape} and tumour mask {tumour.shape} differ")
    search = np.where(tumour, 0.0, prob_map).astype(np.float32)
    peaks = peak_local_max(
        search,
        min_distance=config.min_distance_cells,
        threshold_abs=config.threshold,
        exclude_border=False,
    )
    found = [(int(r), int(c), float(search[r, c])) for r, c in peaks]
    found = [item for item in found if item[2] > config.threshold]
    return sorted(found, key=lambda item: -item[2])


def _confounder_boxes(dataset: Path) -> dict[str, list[tuple[str, list[int]]]]:
    """Slide -> [(kind, [x0, y0, x1, y1])] from the generator's ``dataset.json`` (if any)."""
    path = dataset / layout.METADATA_JSON
    if not path.is_file():
        return {}
    try:
        slides = json.loads(path.read_text()).get("slides", [])
        return {
            s["name"]: [(str(c["kind"]), [int(v) for v in c["box"]]) for c in s["confounders"]]
            for s in slides
            if "confounders" in s
        }
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("%s: cannot read the confounders (%s); no attribution", path, exc)
        return {}


def _inside(boxes: Sequence[tuple[str, list[int]]], x: int, y: int) -> tuple[str, ...]:
    kinds = sorted({k for k, (x0, y0, x1, y1) in boxes if x0 <= x < x1 and y0 <= y < y1})
    return tuple(kinds) or (NO_CONFOUNDER,)


def mine(
    dataset: Path,
    maps: Path,
    slides: Sequence[str],
    normal_centres: int,
    config: MiningConfig,
    annotations: Path | None = None,
) -> tuple[list[MinedCentre], dict[str, Any]]:
    """Mine every slide's map; keep the highest, at most ``max_share * normal_centres``.

    Args:
        dataset: Dataset root (for the confounder attribution of synthetic data).
        maps: ``wsi-infer`` output directory holding each slide's map and report.
        slides: Training slide names.
        normal_centres: How many normal centres the training lists hold (sets the cap).
        config: Selection settings.
        annotations: Directory of ``<slide>.json``/``.xml`` tumour polygons.

    Returns:
        The mined centres (highest probability first) and a summary for the report.

    Raises:
        OutputError: a slide's map is missing or incomplete.
        AnnotationError: a polygon file cannot be read.
    """
    boxes = _confounder_boxes(dataset)
    found: list[MinedCentre] = []
    per_slide: dict[str, dict[str, Any]] = {}
    for slide in slides:
        prob_map, report = read_map(maps, slide)
        scale = float(report["resolution"]["slide_px_per_view_px"])
        cell_px = contract.PATCH_STRIDE * scale
        cell_um = float(report.get("map_cell_um", contract.PATCH_STRIDE * contract.MODEL_MPP))
        margin = math.ceil(config.margin_um / cell_um)
        shape = (int(prob_map.shape[0]), int(prob_map.shape[1]))
        tumour = _tumour_cells(annotations, slide, shape, cell_px, margin)
        peaks = mine_slide(prob_map, tumour, config)
        width, height = (int(v) for v in report["level0_size"])
        for row, col, p in peaks:
            x = min(round((col + 0.5) * cell_px), width - 1)
            y = min(round((row + 0.5) * cell_px), height - 1)
            found.append(MinedCentre(slide, x, y, p, _inside(boxes.get(slide, []), x, y)))
        per_slide[slide] = {
            "tumour_cells_excluded": int(tumour.sum()),
            "cells_above_threshold": int(((prob_map > config.threshold) & ~tumour).sum()),
            "candidates": len(peaks),
        }
    cap = math.ceil(config.max_share * normal_centres)
    found.sort(key=lambda m: -m.probability)
    kept = found[:cap]
    for slide, counts in per_slide.items():
        counts["mined"] = sum(1 for m in kept if m.slide == slide)
    summary = {
        "settings": asdict(config),
        "maps": str(maps),
        "normal_centres": normal_centres,
        "cap": cap,
        "candidates": len(found),
        "mined": len(kept),
        "per_slide": per_slide,
        "by_confounder": dict(Counter(k for m in kept for k in m.confounders)) if boxes else None,
    }
    return kept, summary


def write_mined(centres: Sequence[MinedCentre], path: Path, summary: dict[str, Any]) -> Path:
    """Write the NCRF-style list (``slide_name,x,y``) and ``<path>.json`` beside it."""
    with atomic_path(path) as temporary, temporary.open("w") as handle:
        handle.writelines(f"{m.slide},{m.x},{m.y}\n" for m in centres)
    write_json(
        path.with_suffix(".json"),
        {**summary, "centres": [asdict(m) for m in centres]},
    )
    return path


def count_centres(paths: Sequence[Path]) -> tuple[list[str], int]:
    """Slides named in NCRF coords files, in first-seen order, and the number of centres.

    Raises:
        LabelError: a file is missing or malformed (file and line named).
    """
    from wsi_tumor.training.labels import read_coords

    centres = [c for path in paths for c in read_coords(path)]
    return list(dict.fromkeys(c.slide for c in centres)), len(centres)


__all__ = [
    "NO_CONFOUNDER",
    "MinedCentre",
    "MiningConfig",
    "count_centres",
    "mine",
    "mine_slide",
    "read_map",
    "write_mined",
]
