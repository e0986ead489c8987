"""How far two probability maps of the same slide agree (dense vs exact mode, two runs).

Statistics are taken over the cells both maps computed (the tissue cells: non-zero in
either map, or a given mask), so the large zero background does not inflate them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_tumor.errors import EvaluationError

DECISION_THRESHOLD = 0.5
"""Probability at which a cell counts as tumour for the agreement rate."""
MATCH_RADIUS_CELLS = 2.0
"""Lesion candidates of the two maps within this many cells count as the same."""
BOOTSTRAP_RESAMPLES = 2000
"""Resamples of :func:`bootstrap_interval`."""


@dataclass(frozen=True)
class MapAgreement:
    """Agreement of map ``b`` with map ``a`` over the compared cells.

    Attributes:
        cells: Cells compared.
        max_abs_diff: Largest |a - b|.
        mean_abs_diff: Mean |a - b|.
        pearson: Pearson correlation (nan when either map is constant there).
        decision_agreement: Share of cells on the same side of 0.5 in both maps.
        flipped: Cells on the other side of 0.5 in ``b`` than in ``a``.
    """

    cells: int
    max_abs_diff: float
    mean_abs_diff: float
    pearson: float
    decision_agreement: float
    flipped: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            k: (None if isinstance(v, float) and np.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def map_agreement(
    a: npt.NDArray[np.floating],
    b: npt.NDArray[np.floating],
    mask: npt.NDArray[np.bool_] | None = None,
) -> MapAgreement:
    """Compare two (rows, cols) maps over ``mask`` (default: cells non-zero in either).

    Raises:
        EvaluationError: when the shapes differ or no cell is compared.
    """
    if a.shape != b.shape:
        raise EvaluationError(f"maps differ in shape: {a.shape} vs {b.shape}")
    where = (a != 0) | (b != 0) if mask is None else np.asarray(mask, bool)
    if where.shape != a.shape:
        raise EvaluationError(f"mask shape {where.shape} differs from the maps' {a.shape}")
    x, y = a[where].astype(np.float64), b[where].astype(np.float64)
    if x.size == 0:
        raise EvaluationError("no cell to compare: both maps are empty")
    diff = np.abs(x - y)
    pearson = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
    same = (x >= DECISION_THRESHOLD) == (y >= DECISION_THRESHOLD)
    return MapAgreement(
        cells=int(x.size),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        pearson=pearson,
        decision_agreement=float(same.mean()),
        flipped=int((~same).sum()),
    )


def matched_detections(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], radius_px: float
) -> tuple[int, int, int]:
    """(found by both, only in a, only in b) of two (n, 3) prob,x,y candidate lists.

    A candidate of ``a`` is matched by the nearest unmatched one of ``b`` within
    ``radius_px`` (greedy, highest probability first).
    """
    a = np.asarray(a, np.float64).reshape(-1, 3)
    b = np.asarray(b, np.float64).reshape(-1, 3)
    free = np.ones(len(b), bool)
    both = 0
    for _, x, y in a[np.argsort(-a[:, 0], kind="stable")]:
        if not free.any():
            break
        distance = np.hypot(b[:, 1] - x, b[:, 2] - y)
        distance[~free] = np.inf
        nearest = int(np.argmin(distance))
        if distance[nearest] <= radius_px:
            free[nearest] = False
            both += 1
    return both, len(a) - both, len(b) - both


def bootstrap_interval(
    statistic: Callable[[npt.NDArray[np.int64]], float],
    strata: Sequence[npt.ArrayLike],
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over resamples of item indices.

    Each resample draws every stratum's indices with replacement, as many as it holds (so a
    resample keeps the tumour/normal mix of the slides), and passes them all to
    ``statistic``. Comparing two modes, the statistic scores both on the same indices: a
    paired bootstrap of their difference. Resamples on which the statistic is undefined
    (it raises :class:`EvaluationError`, e.g. no lesion drawn) are left out.

    Raises:
        EvaluationError: No stratum holds an index, or the statistic is undefined on every
            resample.
    """
    groups = [g for g in (np.asarray(s, np.int64).ravel() for s in strata) if g.size]
    if not groups:
        raise EvaluationError("bootstrap over no items")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = np.concatenate([rng.choice(g, size=len(g)) for g in groups])
        try:
            values.append(statistic(drawn))
        except EvaluationError:
            continue
    if not values:
        raise EvaluationError("the statistic is undefined on every bootstrap resample")
    tail = 50 * (1 - level)
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
