"""Torch dataset over a label CSV: one 768 px region per row, nine labelled 224 px patches.

With the ``dense`` or ``mixed`` objective an item is the region's 736 px dense crop instead,
whose dense cells (0, 4, 8) x (0, 4, 8) are the nine patches.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from wsi_tumor.contract import TRAIN_REGION
from wsi_tumor.errors import DatasetError
from wsi_tumor.slide.base import SlideReader
from wsi_tumor.slide.resolution import ModelResolutionView
from wsi_tumor.training.grid import (
    DENSE_CELLS,
    GridSplit,
    Objective,
    csv_to_grid,
    dense_cell_centres,
    dense_crop,
    region_origin,
    split_region,
)
from wsi_tumor.training.labels import (
    LabelRow,
    SlideSizeFn,
    check_centres,
    read_label_csv,
    reader_slide_size,
)
from wsi_tumor.training.transforms import RegionAugment, TrainAugment, to_normalised_tensor

log = logging.getLogger(__name__)

SlideOpener = Callable[[Path], SlideReader]


def _open_with(path: Path, reader: str, mpp: float | None) -> SlideReader:
    from wsi_tumor.slide import open_slide
    from wsi_tumor.slide.resolution import at_model_resolution

    slide = open_slide(path, reader=reader)
    try:
        return at_model_resolution(slide, override=mpp)[0]
    except BaseException:
        slide.close()
        raise


def reader_opener(reader: str, mpp: float | None = None) -> SlideOpener:
    """A picklable ``path -> SlideReader``: the slide at the training resolution.

    A slide within 10 % of 0.243 um/px (CAMELYON16) is the slide itself; another one is a
    :class:`~wsi_tumor.slide.resolution.ModelResolutionView` (``mpp`` forces its um/px).
    """
    return functools.partial(_open_with, reader=reader, mpp=mpp)


class PolygonCellLabels:
    """Labels of a dense crop's 9 x 9 cells from each slide's tumour polygons (picklable).

    Args:
        annotations: Directory of ``<slide>.json`` (NCRF) or ``<slide>.xml`` (ASAP); a slide
            without a file is a normal slide (every cell 0).
    """

    def __init__(self, annotations: Path) -> None:
        if not Path(annotations).is_dir():
            raise DatasetError(f"{annotations}: annotations directory does not exist")
        self.annotations = Path(annotations)
        self._polygons: dict[str, list[Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"annotations": self.annotations, "_polygons": {}}

    def __call__(self, row: LabelRow, scale: float) -> npt.NDArray[np.float32]:
        """(9, 9) labels [row, col] of the crop around ``row``'s centre."""
        from wsi_tumor.annotations.formats import read_annotations
        from wsi_tumor.annotations.polygons import contains
        from wsi_tumor.training.labels import ANNOTATION_SUFFIXES, find_file

        if row.slide not in self._polygons:
            found = find_file(self.annotations, row.slide, ANNOTATION_SUFFIXES)
            self._polygons[row.slide] = list(read_annotations(found)) if found else []
        polygons = self._polygons[row.slide]
        if not polygons:
            return np.zeros((DENSE_CELLS, DENSE_CELLS), np.float32)
        inside = contains(polygons, dense_cell_centres(row.x, row.y, scale))
        return np.asarray(inside, np.float32).reshape(DENSE_CELLS, DENSE_CELLS)


class GridPatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Nine patches and their labels per label-CSV row.

    Each item is ``(patches [9, 3, 224, 224] float32 in [-1, 1], labels [9] float32)`` with
    patches row-major over the 3 x 3 grid; with the ``dense`` or ``mixed`` objective it is
    ``(crop [3, 736, 736], labels [9])`` with the labels row-major over the crop's
    labelled cells. Slides are opened lazily, once per worker process,
    and never pickled: a DataLoader worker opens its own readers.

    Args:
        rows: Label rows (from :func:`read_label_csv`).
        slide_paths: Slide name -> file.
        opener: Opens a slide file (see :func:`reader_opener`).
        train: Apply the bundle's random augmentation (validation: none).
        split: Patch placement inside the region (see :data:`wsi_tumor.training.grid.GridSplit`).
        objective: What an item holds (see :data:`wsi_tumor.training.grid.Objective`); the
            dense crop needs the ``centre`` split.
        stain: Stain augmentation of training items (``none``, ``light``, ``strong``).
        cell_labels: With the ``dense`` or ``mixed`` objective, label every dense cell of
            the crop (labels [81], row-major over its 9 x 9 cells) instead of its nine.
    """

    def __init__(
        self,
        rows: Sequence[LabelRow],
        slide_paths: dict[str, Path],
        opener: SlideOpener,
        train: bool,
        split: GridSplit = "centre",
        objective: Objective = "patch",
        stain: str = "none",
        cell_labels: PolygonCellLabels | None = None,
    ) -> None:
        if objective != "patch" and split != "centre":
            raise DatasetError(f"the {objective} objective needs --grid-split centre")
        if not rows:
            raise DatasetError("dataset has no rows")
        missing = sorted({r.slide for r in rows} - set(slide_paths))
        if missing:
            raise DatasetError(f"no slide path for {missing[:5]}")
        self.rows = list(rows)
        self.slide_paths = dict(slide_paths)
        self.opener = opener
        self.train = train
        self.split: GridSplit = split
        self.objective: Objective = objective
        self.augment = TrainAugment(stain) if train else None
        self.region_augment = RegionAugment(stain) if train else None
        self.cell_labels = cell_labels if objective != "patch" else None
        self._readers: dict[str, SlideReader] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = {}
        return state

    def _reader(self, slide: str) -> SlideReader:
        reader = self._readers.get(slide)
        if reader is None:
            reader = self.opener(self.slide_paths[slide])
            self._readers[slide] = reader
        return reader

    def close(self) -> None:
        """Close the readers this process opened."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.rows[index]
        reader = self._reader(row.slide)
        # a slide at another resolution is read through its view: coordinates in its pixels
        scale = (
            reader.resolution.slide_px_per_view_px
            if isinstance(reader, ModelResolutionView)
            else 1.0
        )
        origin = region_origin(round(row.x / scale), round(row.y / scale))
        region = reader.read_region(origin, (TRAIN_REGION, TRAIN_REGION), level=0)
        grid = torch.from_numpy(
            self.cell_labels(row, scale) if self.cell_labels else csv_to_grid(row.labels)
        )
        if self.objective == "patch":
            patches = split_region(region, self.split)
            images = self.augment(patches) if self.augment else to_normalised_tensor(patches)
        elif self.region_augment is not None:
            images, grid = self.region_augment(dense_crop(region), grid)
        else:
            images = to_normalised_tensor(dense_crop(region)[None])[0]
        return images, grid.reshape(-1)


def load_dataset(
    labels_csv: Path,
    images: Path,
    reader: str,
    train: bool,
    split: GridSplit = "centre",
    opener: SlideOpener | None = None,
    slide_size: SlideSizeFn | None = None,
    mpp: float | None = None,
    objective: Objective = "patch",
    stain: str = "none",
    cell_labels: PolygonCellLabels | None = None,
) -> GridPatchDataset:
    """Read and check a label CSV, then build the dataset.

    Raises:
        LabelError: a malformed line, a missing slide or a centre outside its slide
            (file and line named).
        DatasetError: the CSV has no rows.
    """
    rows = read_label_csv(labels_csv)
    if not rows:
        raise DatasetError(f"{labels_csv}: label CSV has no rows: empty dataset")
    paths = check_centres(rows, images, slide_size or reader_slide_size(reader))
    positives = sum(sum(r.labels) for r in rows)
    log.info(
        "%s: %d regions (%d patches, %d tumour) on %d slides",
        labels_csv,
        len(rows),
        9 * len(rows),
        positives,
        len(paths),
    )
    opener = opener or reader_opener(reader, mpp)
    return GridPatchDataset(rows, paths, opener, train, split, objective, stain, cell_labels)
