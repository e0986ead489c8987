"""Geometry of the 3 x 3 training grid shared by label generation and the dataset.

A training sample is a ``TRAIN_REGION`` x ``TRAIN_REGION`` level-0 region centred on a patch
centre (x, y). It is split into ``GRID_SHAPE`` x ``GRID_SHAPE`` cells of ``GRID_CELL`` px; each
cell has one label, decided at the cell's centre.

Label order in the CSV: the MONAI bundle reads columns ``[3, 6, 9, 4, 7, 10, 5, 8, 11]`` into a
(3, 3) grid indexed [row, col], so CSV label ``k`` (column ``3 + k``) is the cell with
``col = k // 3`` (x index) and ``row = k % 3`` (y index): x outer, y inner, NCRF's loop order.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from wsi_tumor.contract import (
    GRID_CELL,
    GRID_SHAPE,
    PATCH_SIZE,
    PATCH_STRIDE,
    TRAIN_REGION,
    region_size,
)

NUM_CELLS: Final = GRID_SHAPE * GRID_SHAPE
HALF_REGION: Final = TRAIN_REGION // 2

GridSplit = Literal["centre", "monai"]
"""Where each 224 px patch sits in the 768 px region.

``centre``: the centre crop of each 256 px cell (offsets 16, 272, 528; NCRF, and the patch is
centred where its label was decided). ``monai``: MONAI ``GridSplit`` spacing, patches evenly
spread from edge to edge (offsets 0, 272, 544), as the bundle's ``GridSplitd`` does.
"""
GRID_SPLITS: Final = ("centre", "monai")

Objective = Literal["patch", "dense", "mixed"]
"""What the network is trained on.

``patch``: the nine 224 px patches of each region, each augmented on its own (the MONAI
bundle's recipe). ``dense``: the region's centre ``DENSE_CROP`` px through the network whole,
as dense inference runs it, with the loss on the nine cells that carry labels. ``mixed``: both
on the same augmented region, the loss their mean, so that one checkpoint gives the same map
in exact and dense mode (the fine-tuning step of ``make accuracy``).
"""
OBJECTIVES: Final = ("patch", "dense", "mixed")
DENSE_CROP_OFFSET: Final = (GRID_CELL - PATCH_SIZE) // 2
"""Where the dense crop starts in the region: the top-left of the first centre patch (16)."""
LABEL_STEP_CELLS: Final = GRID_CELL // PATCH_STRIDE
"""Dense cells between labelled cells: the centre patches are 256 px = 4 cells apart."""
DENSE_CELLS: Final = (GRID_SHAPE - 1) * LABEL_STEP_CELLS + 1
"""k of the dense crop (9): its cells 0, 4 and 8 on each axis are the centre patches."""
DENSE_CROP: Final = region_size(DENSE_CELLS)
"""Side of the dense crop (736 px)."""


def region_origin(x: int, y: int) -> tuple[int, int]:
    """Level-0 (x, y) top-left of the training region centred on patch centre (x, y)."""
    return x - HALF_REGION, y - HALF_REGION


def cell_centres_csv_order(x: int, y: int, scale: float = 1.0) -> npt.NDArray[np.float64]:
    """Level-0 (x, y) centres of the nine cells around (x, y), in CSV label order.

    Args:
        x: Level-0 column of the region's centre.
        y: Level-0 row.
        scale: Slide level-0 pixels per training-resolution pixel (1 for CAMELYON16; 0.487
            for a 20x slide, whose 256 px cells are 125 of its own pixels).

    Returns:
        (9, 2) array; row ``k`` is the centre of cell (col ``k // 3``, row ``k % 3``).
    """
    out = np.empty((NUM_CELLS, 2), dtype=np.float64)
    for k in range(NUM_CELLS):
        col, row = divmod(k, GRID_SHAPE)
        out[k] = (
            x + (col * GRID_CELL + GRID_CELL // 2 - HALF_REGION) * scale,
            y + (row * GRID_CELL + GRID_CELL // 2 - HALF_REGION) * scale,
        )
    return out


DENSE_LABELS: Final = ("grid", "cells")
"""Which cells of a dense crop carry labels: ``grid``, the region's nine (the label CSV's);
``cells``, every one of its :data:`DENSE_CELLS` x :data:`DENSE_CELLS` dense cells, each
labelled from the tumour polygons as the nine are (its centre inside tumour, outside any
exclusion): nine times the supervision from the same pixels."""


def dense_cell_centres(x: int, y: int, scale: float = 1.0) -> npt.NDArray[np.float64]:
    """Level-0 (x, y) centres of the dense crop's 9 x 9 cells, row-major over [row, col].

    Cell (row, col) is centred ``(64 * col - 256, 64 * row - 256)`` training pixels from the
    region's centre (x, y); cells (0, 4, 8) x (0, 4, 8) are the nine grid cells.
    """
    steps = (np.arange(DENSE_CELLS) * PATCH_STRIDE - (GRID_CELL * (GRID_SHAPE // 2))) * scale
    yy, xx = np.meshgrid(y + steps, x + steps, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def csv_to_grid(labels_csv_order: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Reorder nine CSV labels into a (3, 3) grid indexed [row (y), col (x)]."""
    flat = np.asarray(labels_csv_order, dtype=np.float32).reshape(NUM_CELLS)
    return flat.reshape(GRID_SHAPE, GRID_SHAPE).T.copy()


def patch_offsets(split: GridSplit = "centre") -> tuple[int, ...]:
    """Offsets (both axes) of the patches' top-left corners inside the region."""
    if split == "centre":
        margin = (GRID_CELL - PATCH_SIZE) // 2
        return tuple(i * GRID_CELL + margin for i in range(GRID_SHAPE))
    step = (TRAIN_REGION - PATCH_SIZE) // (GRID_SHAPE - 1)
    return tuple(i * step for i in range(GRID_SHAPE))


def dense_crop(region: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The (736, 736, 3) centre of a (768, 768, 3) region that dense inference would see.

    Its dense cells (0, 4, 8) x (0, 4, 8) are exactly the ``centre`` split's nine patches.
    """
    end = DENSE_CROP_OFFSET + DENSE_CROP
    return region[DENSE_CROP_OFFSET:end, DENSE_CROP_OFFSET:end]


def split_region(
    region: npt.NDArray[np.uint8], split: GridSplit = "centre"
) -> npt.NDArray[np.uint8]:
    """Cut a (768, 768, 3) region into nine (224, 224, 3) patches, row-major over [row, col].

    Returns:
        (9, 224, 224, 3) array; patch ``3 * row + col`` matches ``csv_to_grid(...)[row, col]``.
    """
    offsets = patch_offsets(split)
    return np.stack(
        [region[oy : oy + PATCH_SIZE, ox : ox + PATCH_SIZE] for oy in offsets for ox in offsets]
    )
