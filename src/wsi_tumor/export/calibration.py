"""INT8 calibration data: tissue patches and regions read from the training slides.

The slides are read as the client reads them (``open_slide``, the model's resolution, the
tissue mask at ``contract.MASK_LEVEL``): patches are the 224 px squares centred on tissue
cells, exactly as the exact mode cuts them, and regions are k x k-cell squares around tissue
cells with their tissue mask, as the dense mode sends them. Cells are drawn at random (seeded)
from the tissue of all the slides together, so a slide contributes in proportion to its
tissue. :meth:`CalibrationSet.manifest` records what was drawn from where; the export writes
it beside each quantised model.

``source`` is a ``wsi-synth`` dataset directory (its training split, from
``coords/slides.csv``), a folder of slides, or one slide.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.data import layout
from wsi_tumor.errors import ExportError, SlideError

log = logging.getLogger(__name__)

DEFAULT_PATCHES: Final = 256
"""Classifier calibration patches (see docs/int8.md for the measurement behind it)."""
DEFAULT_REGIONS: Final = 16
"""Dense-model calibration regions."""
REGION_CELLS: Final = 8
"""k of the calibration regions (672 px): the halo's share of a region of the dense mode."""


@dataclass(frozen=True)
class CalibrationConfig:
    """What to calibrate on.

    Attributes:
        source: Dataset directory, slide folder or slide file.
        patches: Patches for the classifier.
        regions: Regions for the dense model.
        region_cells: k of the regions.
        seed: Seed of the draw.
    """

    source: Path
    patches: int = DEFAULT_PATCHES
    regions: int = DEFAULT_REGIONS
    region_cells: int = REGION_CELLS
    seed: int = 0


@dataclass
class CalibrationSet:
    """The drawn calibration inputs (uint8, as the client sends them) and their origin.

    Attributes:
        patches: [P, 224, 224, 3] patches centred on tissue cells.
        regions: [R, S, S, 3] regions of k cells, S = region_size(k).
        masks: [R, k, k] their tissue cells.
        slides: Per slide read: its path and tissue cell count.
        drawn: Per slide name: (patches, regions) drawn from it.
        config: The request.
    """

    patches: npt.NDArray[np.uint8]
    regions: npt.NDArray[np.uint8]
    masks: npt.NDArray[np.bool_]
    slides: list[dict[str, Any]]
    drawn: dict[str, tuple[int, int]] = field(default_factory=dict)
    config: CalibrationConfig | None = None

    def manifest(self) -> dict[str, Any]:
        """JSON-ready record: source, seed, counts and per-slide numbers."""
        config = self.config
        return {
            "source": str(config.source) if config else None,
            "seed": config.seed if config else None,
            "patches": len(self.patches),
            "regions": len(self.regions),
            "region_cells": int(self.masks.shape[1]) if self.masks.size else None,
            "rule": "cells drawn uniformly from the tissue of all slides (MONAI tissue mask)",
            "slides": [
                {
                    **slide,
                    "patches": self.drawn.get(slide["name"], (0, 0))[0],
                    "regions": self.drawn.get(slide["name"], (0, 0))[1],
                }
                for slide in self.slides
            ],
        }


def calibration_slides(source: Path) -> list[Path]:
    """The slides ``source`` names: a dataset's training split, a folder's slides, a slide.

    Raises:
        ExportError: when ``source`` does not exist or holds no slide.
    """
    from wsi_tumor.slide import SLIDE_SUFFIXES

    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise ExportError(f"{source}: calibration source does not exist")
    listing = layout.coords_path(source, layout.SLIDES_CSV)
    if listing.is_file():
        with open(listing, newline="") as handle:
            names = [row["slide"] for row in csv.DictReader(handle) if row["split"] == "train"]
        slides = [layout.image_path(source, name) for name in names]
        missing = [path for path in slides if not path.is_file()]
        if missing:
            raise ExportError(f"{listing}: training slide {missing[0]} does not exist")
    else:
        folder = source / layout.IMAGES_DIR if (source / layout.IMAGES_DIR).is_dir() else source
        slides = sorted(p for p in folder.iterdir() if p.suffix.lower() in SLIDE_SUFFIXES)
    if not slides:
        raise ExportError(f"{source}: no slide to calibrate on (empty calibration set)")
    return slides


def read_calibration_set(config: CalibrationConfig, quiet: bool = True) -> CalibrationSet:
    """Draw the calibration patches and regions from the tissue of ``config.source``.

    Raises:
        ExportError: on an empty source, no tissue in any slide, or bad counts.
    """
    from tqdm import tqdm

    from wsi_tumor.slide import open_slide, tissue_mask
    from wsi_tumor.slide.resolution import at_model_resolution

    if config.patches < 1 or config.regions < 1:
        raise ExportError("calibration needs at least one patch and one region")
    if not contract.DENSE_MIN_CELLS <= config.region_cells <= contract.DENSE_MAX_CELLS:
        raise ExportError(f"calibration regions of k = {config.region_cells} are out of range")
    paths = calibration_slides(config.source)
    masks: list[npt.NDArray[np.bool_]] = []
    slides: list[dict[str, Any]] = []
    for path in tqdm(paths, desc="calibration masks", unit="slide", disable=quiet):
        try:
            with open_slide(path) as source:
                view, _ = at_model_resolution(source)
                mask = np.asarray(tissue_mask(view, contract.MASK_LEVEL), bool)
        except SlideError as exc:
            log.warning("%s: left out of the calibration set: %s", path, exc)
            mask = np.zeros((0, 0), bool)
        masks.append(mask)
        slides.append({"name": path.stem, "path": str(path), "tissue_cells": int(mask.sum())})
    cells = [(i, int(r), int(c)) for i, mask in enumerate(masks) for r, c in np.argwhere(mask)]
    if not cells:
        raise ExportError(
            f"{config.source}: no tissue cell in its {len(paths)} slide(s) (tissue mask at "
            f"level {contract.MASK_LEVEL}): nothing to calibrate on"
        )
    rng = np.random.default_rng(config.seed)
    picks = rng.choice(len(cells), config.patches, replace=len(cells) < config.patches)
    anchors = rng.choice(len(cells), config.regions, replace=len(cells) < config.regions)
    by_slide: dict[int, tuple[list[int], list[int]]] = {}
    for index in picks:
        by_slide.setdefault(cells[index][0], ([], []))[0].append(int(index))
    for index in anchors:
        by_slide.setdefault(cells[index][0], ([], []))[1].append(int(index))
    patches, regions, region_masks = [], [], []
    side, k = contract.region_size(config.region_cells), config.region_cells
    for slide_index, (patch_cells, region_cells) in sorted(by_slide.items()):
        mask = masks[slide_index]
        with open_slide(paths[slide_index]) as source:
            view, _ = at_model_resolution(source)
            for index in patch_cells:
                _, row, col = cells[index]
                origin = contract.cell_patch_origin(col, row)
                size = (contract.PATCH_SIZE, contract.PATCH_SIZE)
                patches.append(view.read_region(origin, size, contract.INFERENCE_LEVEL))
            for index in region_cells:
                _, row, col = cells[index]
                top = int(np.clip(row - k // 2, 0, max(0, mask.shape[0] - k)))
                left = int(np.clip(col - k // 2, 0, max(0, mask.shape[1] - k)))
                cut = np.zeros((k, k), bool)
                window = mask[top : top + k, left : left + k]
                cut[: window.shape[0], : window.shape[1]] = window
                origin = contract.cell_patch_origin(left, top)
                regions.append(view.read_region(origin, (side, side), contract.INFERENCE_LEVEL))
                region_masks.append(cut)
    drawn = {paths[i].stem: (len(p), len(r)) for i, (p, r) in by_slide.items()}
    result = CalibrationSet(
        patches=np.stack(patches).astype(np.uint8),
        regions=np.stack(regions).astype(np.uint8),
        masks=np.stack(region_masks),
        slides=slides,
        drawn=drawn,
        config=config,
    )
    log.info(
        "calibration set: %d patches and %d regions (k = %d) from %d of %d slides under %s",
        len(result.patches),
        len(result.regions),
        k,
        len(by_slide),
        len(paths),
        config.source,
    )
    return result
