"""Numpy logic of the ensemble's Python steps: validate, tile regions, assemble grids.

``patch_tiler`` turns uint8 regions [N, H, W, 3] and a cell mask [N, k, k] into normalised
CHW patches [P, 3, 224, 224] (row-major over (n, row, col) of the true cells);
``grid_assembler`` scatters the classifier's probabilities [P, 1] back to grids [N, k, k].
Every check raises :class:`~wsi_tumor.errors.RequestError` naming the tensor and the problem;
the Triton adapters answer it as INVALID_ARG.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.errors import RequestError
from wsi_tumor.serving.limits import MAX_PATCHES_PER_REQUEST, max_regions_per_request


def cells_for_region(size: int) -> int:
    """Return k such that ``contract.region_size(k) == size``.

    Raises:
        RequestError: when ``size`` is smaller than one patch or not 224 + (k - 1) * 64.
    """
    if size < contract.PATCH_SIZE:
        raise RequestError(
            f"{contract.REGIONS_TENSOR}: region side {size} px is smaller than one "
            f"{contract.PATCH_SIZE} px patch"
        )
    extra = size - contract.PATCH_SIZE
    if extra % contract.PATCH_STRIDE:
        below = contract.PATCH_SIZE + (extra // contract.PATCH_STRIDE) * contract.PATCH_STRIDE
        raise RequestError(
            f"{contract.REGIONS_TENSOR}: region side {size} px is not "
            f"{contract.PATCH_SIZE} + (k - 1) * {contract.PATCH_STRIDE} for an integer k "
            f"(nearest valid sides: {below} and {below + contract.PATCH_STRIDE})"
        )
    return extra // contract.PATCH_STRIDE + 1


def validate_regions(
    regions: npt.NDArray[np.generic],
    cell_mask: npt.NDArray[np.generic],
    cells_range: tuple[int, int] | None = None,
) -> int:
    """Check regions UINT8 [N, H, W, 3] and their cell mask BOOL [N, k, k]; return k.

    Args:
        regions: The ``regions`` tensor, H = W = ``contract.region_size(k)``.
        cell_mask: The ``cell_mask`` tensor.
        cells_range: Inclusive (min, max) of the k a model accepts; None: any.

    Raises:
        RequestError: naming the tensor and what is wrong (dtype, rank, sizes, k).
    """
    name, mask_name = contract.REGIONS_TENSOR, contract.CELL_MASK_TENSOR
    if regions.dtype != np.uint8:
        raise RequestError(f"{name}: dtype must be uint8, got {regions.dtype}")
    if regions.ndim != 4 or regions.shape[-1] != contract.CHANNELS:
        raise RequestError(
            f"{name}: shape must be [N, H, W, {contract.CHANNELS}], got {list(regions.shape)}"
        )
    count, height, width, _ = regions.shape
    if count < 1:
        raise RequestError(f"{name}: the request holds no region (N = 0)")
    if height != width:
        raise RequestError(f"{name}: regions must be square, got H = {height}, W = {width}")
    cells = cells_for_region(height)
    if cells_range is not None and not cells_range[0] <= cells <= cells_range[1]:
        low, high = cells_range
        raise RequestError(
            f"{name}: region side {height} px is k = {cells} cells; this model takes k from "
            f"{low} ({contract.region_size(low)} px) to {high} ({contract.region_size(high)} px)"
        )
    if cell_mask.dtype != np.bool_:
        raise RequestError(f"{mask_name}: dtype must be bool, got {cell_mask.dtype}")
    expected = [count, cells, cells]
    if list(cell_mask.shape) != expected:
        raise RequestError(
            f"{mask_name}: shape must be [N, k, k] = {expected} for {count} regions of "
            f"{height} px (k = {cells}), got {list(cell_mask.shape)}"
        )
    return cells


def validate_request(
    regions: npt.NDArray[np.generic],
    cell_mask: npt.NDArray[np.generic],
    max_patches: int = MAX_PATCHES_PER_REQUEST,
) -> int:
    """Check one tiler request and return k, the region side in mask cells.

    Args:
        regions: UINT8 [N, H, W, 3] with H = W = ``contract.region_size(k)``.
        cell_mask: BOOL [N, k, k]; at least one cell true, at most ``max_patches`` cells in
            all (N * k * k, true or not: what bounds the request's bytes, see
            :mod:`wsi_tumor.serving.memory`).
        max_patches: Most cells allowed (the classifier's ``max_batch_size``).

    Raises:
        RequestError: naming the tensor and what is wrong (dtype, rank, sizes, empty mask,
            too many cells).
    """
    cells = validate_regions(regions, cell_mask)
    mask_name = contract.CELL_MASK_TENSOR
    if not np.any(cell_mask):
        raise RequestError(f"{mask_name}: no cell is true, so there is nothing to classify")
    if cell_mask.size > max_patches:
        limit = max_regions_per_request(cells, max_patches) if cells**2 <= max_patches else 0
        raise RequestError(
            f"{mask_name}: {len(cell_mask)} regions of k = {cells} hold {cell_mask.size} "
            f"cells, more than the {max_patches} patches one request may carry (send at "
            f"most {limit} regions of k = {cells} per request)"
        )
    return cells


def tile_regions(
    regions: npt.NDArray[np.uint8],
    cell_mask: npt.NDArray[np.bool_],
    max_patches: int = MAX_PATCHES_PER_REQUEST,
) -> npt.NDArray[np.float32]:
    """Cut the patch of every true mask cell, normalise it and transpose it to CHW.

    The patch of cell (row, col) of region n is ``regions[n, row*s : row*s + 224,
    col*s : col*s + 224]`` with s = ``contract.PATCH_STRIDE``; patches come in row-major
    order over (n, row, col). Each region holding a true cell is normalised once, as a
    whole, and the overlapping patches are copied out of it (a pixel is normalised once,
    not once per patch that covers it).

    Returns:
        FP32 [P, 3, 224, 224], P = number of true cells, scaled by ``contract.normalise``.

    Raises:
        RequestError: see :func:`validate_request`.
    """
    validate_request(regions, cell_mask, max_patches)
    size, stride = contract.PATCH_SIZE, contract.PATCH_STRIDE
    out = np.empty(
        (int(np.count_nonzero(cell_mask)), contract.CHANNELS, size, size), dtype=np.float32
    )
    index = 0
    for region, mask in zip(regions, cell_mask, strict=True):
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        normalised = contract.normalise(region).transpose(2, 0, 1)
        for row, col in zip(rows, cols, strict=True):
            y, x = int(row) * stride, int(col) * stride
            out[index] = normalised[:, y : y + size, x : x + size]
            index += 1
    return out


def assemble_grid(
    probabilities: npt.NDArray[np.generic], cell_mask: npt.NDArray[np.generic]
) -> npt.NDArray[np.float32]:
    """Scatter per-patch probabilities back onto the cell grids of their regions.

    Args:
        probabilities: FP32 [P, 1] in the tiler's order.
        cell_mask: BOOL [N, k, k] with exactly P true cells.

    Returns:
        FP32 [N, k, k]: the probability of each true cell, 0 where the mask is off.

    Raises:
        RequestError: on a wrong dtype, rank or a count that does not match the mask.
    """
    name, mask_name = contract.PROBABILITIES_TENSOR, contract.CELL_MASK_TENSOR
    if probabilities.dtype != np.float32:
        raise RequestError(f"{name}: dtype must be float32, got {probabilities.dtype}")
    if probabilities.ndim != 2 or probabilities.shape[1] != 1:
        raise RequestError(f"{name}: shape must be [P, 1], got {list(probabilities.shape)}")
    if cell_mask.dtype != np.bool_:
        raise RequestError(f"{mask_name}: dtype must be bool, got {cell_mask.dtype}")
    if cell_mask.ndim != 3 or cell_mask.shape[1] != cell_mask.shape[2]:
        raise RequestError(f"{mask_name}: shape must be [N, k, k], got {list(cell_mask.shape)}")
    true_cells = int(np.count_nonzero(cell_mask))
    if probabilities.shape[0] != true_cells:
        raise RequestError(
            f"{name}: {probabilities.shape[0]} probabilities for {true_cells} true cells "
            f"of {mask_name}"
        )
    grid = np.zeros(cell_mask.shape, dtype=np.float32)
    grid[cell_mask] = probabilities[:, 0]
    return grid
