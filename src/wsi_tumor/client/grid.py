"""Mask cells -> k x k regions: the geometry between the tissue mask and the ensemble.

One patch is classified per foreground cell (row, col) of the mask at
``contract.MASK_LEVEL``, centred at level-0 ((col + 0.5) * s, (row + 0.5) * s) with
s = ``contract.PATCH_STRIDE``: exactly MONAI's ``MaskedPatchWSIDataset(mask_level=6,
patch_size=224)`` locations. Cells are grouped into non-overlapping blocks of k x k; a block
holding tissue becomes a :class:`Region`, read once at level 0 with top-left
``contract.cell_patch_origin(col0, row0)`` and side ``contract.region_size(k)``, which the
ensemble's tiler cuts into the same patches. Every tissue cell lies in exactly one region.

Dense mode plans a quadtree instead (:func:`plan_dense_regions`): its cost is the pixels run
through the network, ``region_size(k)**2`` per region whatever its tissue, so each block
shrinks to the square that bounds its tissue, and a block whose tissue is spread thin is
split into the halves that hold some.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.errors import ConfigError


@dataclass(frozen=True)
class Region:
    """A k x k block of mask cells whose top-left cell is (``col0``, ``row0``).

    Attributes:
        col0: Mask-level column of the block's first cell (x).
        row0: Mask-level row of the block's first cell (y).
        cell_mask: BOOL (k, k), indexed [row - row0, col - col0]; cells outside the mask
            are False.
    """

    col0: int
    row0: int
    cell_mask: npt.NDArray[np.bool_]

    @property
    def cells(self) -> int:
        """k, the side of the block in mask cells."""
        return int(self.cell_mask.shape[0])

    @property
    def patches(self) -> int:
        """Number of patches (true cells) the region carries."""
        return int(np.count_nonzero(self.cell_mask))

    @property
    def origin(self) -> tuple[int, int]:
        """Level-0 (x, y) top-left of the region: the patch origin of its first cell."""
        return contract.cell_patch_origin(self.col0, self.row0)

    @property
    def size(self) -> tuple[int, int]:
        """Level-0 (w, h) of the region."""
        side = contract.region_size(self.cells)
        return side, side


def patch_centres(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Level-0 (x, y) centres of the patches of every true cell, in row-major order.

    These are MONAI's ``MaskedPatchWSIDataset`` locations for ``mask_level`` =
    ``contract.MASK_LEVEL`` (MONAI stores them as (y, x)).

    Returns:
        INT64 (n, 2) of (x, y).
    """
    rows, cols = np.nonzero(mask)
    stride = contract.PATCH_STRIDE
    return np.stack([cols * stride + stride // 2, rows * stride + stride // 2], axis=1).astype(
        np.int64
    )


def plan_regions(mask: npt.NDArray[np.bool_], cells: int = contract.REGION_CELLS) -> list[Region]:
    """Group the true cells of ``mask`` into k x k regions, skipping blocks without tissue.

    Args:
        mask: BOOL (rows, cols) tissue mask at the mask level (row = y, col = x).
        cells: k, the side of a region in mask cells.

    Returns:
        Regions in row-major block order (top to bottom, then left to right), so reads
        walk the slide in stripes.

    Raises:
        ConfigError: when ``mask`` is not 2-D or ``cells`` < 1.
    """
    if cells < 1:
        raise ConfigError(f"--region-cells must be >= 1, got {cells}")
    if mask.ndim != 2:
        raise ConfigError(f"tissue mask must be 2-D (rows, cols), got shape {mask.shape}")
    rows, cols = mask.shape
    padded = np.zeros((-(-rows // cells) * cells, -(-cols // cells) * cells), dtype=bool)
    padded[:rows, :cols] = mask.astype(bool, copy=False)
    blocks = padded.reshape(padded.shape[0] // cells, cells, padded.shape[1] // cells, cells)
    blocks = blocks.transpose(0, 2, 1, 3)  # (block_row, block_col, k, k)
    occupied = blocks.any(axis=(2, 3))
    return [
        Region(col0=int(bc) * cells, row0=int(br) * cells, cell_mask=blocks[br, bc].copy())
        for br, bc in zip(*np.nonzero(occupied), strict=True)
    ]


def plan_dense_regions(
    mask: npt.NDArray[np.bool_],
    cells: int = contract.DENSE_REGION_CELLS,
    smallest: int = contract.DENSE_SPLIT_CELLS,
) -> list[Region]:
    """Cover the true cells of ``mask`` with square regions of k <= ``cells``.

    Each k x k block of the mask becomes the square that bounds its true cells (side
    max(height, width), at least ``contract.DENSE_MIN_CELLS``), or, where that costs fewer
    pixels, its occupied k/2 blocks planned the same way (blocks of even k >= 2 x
    ``smallest`` only). A square may reach past its block; cells outside the block are off
    in its ``cell_mask``, so every true cell lies in exactly one region.

    Returns:
        Regions sorted by k (largest first), then row-major, so requests hold one k.
    """
    out = [part for block in plan_regions(mask, cells) for part in _plan_block(block, smallest)]
    return sorted(out, key=lambda r: (-r.cells, r.row0, r.col0))


def _pixels(regions: Sequence[Region]) -> int:
    return sum(contract.region_size(region.cells) ** 2 for region in regions)


def _plan_block(block: Region, smallest: int) -> list[Region]:
    rows, cols = np.nonzero(block.cell_mask)
    top, left = int(rows.min()), int(cols.min())
    side = max(int(rows.max()) - top, int(cols.max()) - left) + 1
    side = max(side, contract.DENSE_MIN_CELLS)
    square = np.zeros((side, side), dtype=bool)
    inside = block.cell_mask[top : top + side, left : left + side]
    square[: inside.shape[0], : inside.shape[1]] = inside
    best = [Region(block.col0 + left, block.row0 + top, square)]
    half = block.cells // 2
    if block.cells % 2 == 0 and half >= smallest:
        split = [
            piece
            for part in plan_regions(block.cell_mask, half)
            for piece in _plan_block(
                Region(block.col0 + part.col0, block.row0 + part.row0, part.cell_mask), smallest
            )
        ]
        if _pixels(split) < _pixels(best):
            best = split
    return best


def batched(regions: Sequence[Region], size: int) -> Iterator[Sequence[Region]]:
    """Split ``regions`` into consecutive requests of at most ``size`` regions of one k."""
    if size < 1:
        raise ConfigError(f"--regions-per-request must be >= 1, got {size}")
    for _, same_k in itertools.groupby(regions, key=lambda region: region.cells):
        group = list(same_k)
        for start in range(0, len(group), size):
            yield group[start : start + size]


def place_grid(
    prob_map: npt.NDArray[np.float32], region: Region, grid: npt.NDArray[np.float32]
) -> None:
    """Write a region's k x k probability grid into the mask-level map (true cells only).

    Cells of the block that fall outside the map (the slide's right and bottom edges) are
    dropped.
    """
    rows, cols = prob_map.shape
    k = region.cells
    height, width = min(k, rows - region.row0), min(k, cols - region.col0)
    target = prob_map[region.row0 : region.row0 + height, region.col0 : region.col0 + width]
    keep = region.cell_mask[:height, :width]
    target[keep] = grid[:height, :width][keep]
