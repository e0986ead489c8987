"""Features of a tumour probability map for the slide-level task (CAMELYON16 task 2).

After Wang et al. (2016, arXiv 1606.05718), who scored slides with a classifier over
features of the heatmap: the map's maximum and smoothed maximum, the mean of its highest
cells, the area above 0.5 and 0.9, and the number, area and extent of the regions above
them. Areas are in mm^2 of tissue (a map cell is 64 model pixels, 15.55 um at 0.243 um/px);
large counts are log-compressed so that a logistic model sees them on a usable scale.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.errors import EvaluationError

FEATURES_VERSION: Final = 1
"""Bumped whenever a feature's definition changes: a fitted scorer records it."""
TOP_CELLS: Final = 16
"""Cells averaged by ``top_mean``."""
_EPS: Final = 1e-6

FEATURE_NAMES: Final = (
    "max",
    "max_logit",
    "smoothed_max",
    "top_mean",
    "log_area_050",
    "log_area_090",
    "regions_050",
    "log_largest_050",
    "largest_050_extent_mm",
)
"""Every feature :func:`map_features` computes, in this order."""


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def map_features(
    prob_map: npt.NDArray[np.floating], cell_um: float = contract.PATCH_STRIDE * contract.MODEL_MPP
) -> dict[str, float]:
    """The features of one slide's probability map.

    Args:
        prob_map: (rows, cols) probabilities, 0 off tissue.
        cell_um: Side of a map cell in microns.

    Returns:
        Feature name -> value, for every name in :data:`FEATURE_NAMES`.

    Raises:
        EvaluationError: the map is not 2-D, is empty or holds values outside [0, 1].
    """
    from scipy.ndimage import uniform_filter
    from skimage.measure import label, regionprops

    grid = np.asarray(prob_map, dtype=np.float64)
    if grid.ndim != 2 or grid.size == 0:
        raise EvaluationError(f"a probability map must be a non-empty 2-D array, got {grid.shape}")
    if not np.isfinite(grid).all() or grid.min() < 0.0 or grid.max() > 1.0:
        raise EvaluationError("a probability map must hold values in [0, 1]")
    cell_mm2 = (cell_um / 1000.0) ** 2
    top = np.sort(grid, axis=None)[-TOP_CELLS:]
    above_050 = grid > 0.5
    regions = regionprops(label(above_050, connectivity=2))
    largest = max(regions, key=lambda r: r.area, default=None)
    features = {
        "max": float(grid.max()),
        "max_logit": _logit(float(grid.max())),
        "smoothed_max": float(uniform_filter(grid, size=3, mode="constant").max()),
        "top_mean": float(top.mean()),
        "log_area_050": math.log10(1.0 + above_050.sum() * cell_mm2 * 1000.0),
        "log_area_090": math.log10(1.0 + (grid > 0.9).sum() * cell_mm2 * 1000.0),
        "regions_050": float(len(regions)),
        "log_largest_050": math.log10(
            1.0 + (largest.area if largest is not None else 0) * cell_mm2 * 1000.0
        ),
        "largest_050_extent_mm": float(largest.axis_major_length * cell_um / 1000.0)
        if largest is not None
        else 0.0,
    }
    return {name: features[name] for name in FEATURE_NAMES}
