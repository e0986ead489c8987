"""Non-maximum suppression of probability maps and ``prob,x,y`` detection CSVs.

The WSI client turns its probability map into lesion candidates with :func:`nms`, and FROC
evaluation does the same for ``.npy`` maps, so both see identical detections.

Orientation: our maps are (rows, cols) = (y, x). NCRF's ``nms.py`` works on a map stored
as (x, y), so NCRF on ``prob_map.T`` equals :func:`nms` on ``prob_map`` (same detections, same
order, same tie-breaks).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from wsi_tumor.errors import EvaluationError
from wsi_tumor.fileio import format_number, write_text

log = logging.getLogger(__name__)

CSV_HEADER = "prob,x,y"
"""Optional first line of a detections CSV; :func:`write_detections` omits it by default."""
NMS_RADIUS: Final = 12
"""NCRF's suppression radius in level-6 cells."""
NMS_BOX: Final = 48
"""MONAI ``LesionFROC``'s suppression box in cells."""
NMS_THRESHOLD: Final = 0.5
"""NMS stops once the remaining maximum is <= this probability (NCRF and MONAI)."""

Detections = npt.NDArray[np.float64]
"""(n, 3) float64 array of (prob, x, y) with level-0 x = column, y = row."""


def empty_detections() -> Detections:
    """Return a (0, 3) detections array."""
    return np.zeros((0, 3), dtype=np.float64)


def _greedy_nms(
    prob_map: npt.ArrayLike,
    level: int,
    lower: int,
    upper: int,
    threshold: float,
    x_major: bool,
    size: tuple[int, int] | None,
) -> Detections:
    """Pick maxima > ``threshold`` greedily, suppressing the box [c - lower, c + upper).

    Equivalent to the reference loops (take the global maximum, zero its box, repeat) but
    visits each candidate once: candidates are sorted by descending probability with the
    reference's tie-break (first index in C order of the reference's array layout) and
    skipped when an earlier pick's box covered them. Zeroed cells can never be picked again
    because ``threshold >= 0``.
    """
    arr = np.asarray(prob_map)
    if arr.ndim != 2:
        raise EvaluationError(f"probability map must be 2-D (rows, cols), got shape {arr.shape}")
    if threshold < 0 or not math.isfinite(threshold):
        raise EvaluationError(f"NMS threshold must be a finite number >= 0, got {threshold}")
    if level < 0:
        raise EvaluationError(f"NMS level must be >= 0, got {level}")
    values = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(values)):
        raise EvaluationError("probability map contains NaN or infinite values")
    rows, cols = np.nonzero(values > threshold)
    if rows.size == 0:
        return empty_detections()
    probs = values[rows, cols]
    # np.lexsort sorts by the last key first: probability descending, then the reference's
    # C-order position (x then y for NCRF's (x, y) arrays, row then col for MONAI's).
    order = np.lexsort((rows, cols, -probs)) if x_major else np.lexsort((cols, rows, -probs))
    n_rows, n_cols = values.shape
    suppressed = np.zeros(values.shape, dtype=bool)
    scale = 2**level
    picked: list[tuple[float, int, int]] = []
    for i in order:
        r, c = int(rows[i]), int(cols[i])
        if suppressed[r, c]:
            continue
        picked.append((float(probs[i]), int((c + 0.5) * scale), int((r + 0.5) * scale)))
        r0, r1 = max(r - lower, 0), min(r + upper, n_rows)
        c0, c1 = max(c - lower, 0), min(c + upper, n_cols)
        suppressed[r0:r1, c0:c1] = True
    log.debug("NMS kept %d of %d cells above %.3f", len(picked), rows.size, threshold)
    detections = np.asarray(picked, dtype=np.float64).reshape(-1, 3)
    if size is not None:
        # The centre of a last, partial mask cell can lie past the slide's edge.
        np.minimum(detections[:, 1], size[0] - 1, out=detections[:, 1])
        np.minimum(detections[:, 2], size[1] - 1, out=detections[:, 2])
    return detections


def nms(
    prob_map: npt.ArrayLike,
    level: int,
    radius: int = NMS_RADIUS,
    threshold: float = NMS_THRESHOLD,
    size: tuple[int, int] | None = None,
) -> Detections:
    """NCRF-style non-maximum suppression of a (rows, cols) probability map.

    Repeatedly takes the maximum while it is > ``threshold`` and zeroes the cells
    ``[row - radius, row + radius)`` x ``[col - radius, col + radius)`` around it, clipped to
    the map: NCRF's exact bounds, a 2 * radius box whose far edge is exclusive. Among equal
    maxima the smallest column (x) wins, then the smallest row, as NCRF's ``np.where`` on its
    (x, y) array does.

    Args:
        prob_map: (rows, cols) = (y, x) probabilities at pyramid ``level``.
        level: Level of the map; one cell is 2**level level-0 pixels.
        radius: Suppression radius in cells (NCRF default 12 at level 6); must be >= 1.
        threshold: Stop when the remaining maximum is <= this value (>= 0).
        size: Level-0 (w, h) of the slide: coordinates are clipped to ``w - 1``/``h - 1``
            (the centre of a partial last cell can lie outside the slide).

    Returns:
        (n, 3) float64 (prob, x, y), level-0 coordinates of cell centres,
        ``int((col + 0.5) * 2**level)`` and ``int((row + 0.5) * 2**level)``, highest first.

    Raises:
        EvaluationError: The map is not 2-D or not finite, or radius/threshold are invalid.
    """
    if radius < 1:
        raise EvaluationError(f"NMS radius must be >= 1 cell, got {radius}")
    return _greedy_nms(prob_map, level, radius, radius, threshold, x_major=True, size=size)


def nms_monai(
    prob_map: npt.ArrayLike,
    level: int,
    box_size: int = NMS_BOX,
    threshold: float = NMS_THRESHOLD,
    size: tuple[int, int] | None = None,
) -> Detections:
    """MONAI ``PathologyProbNMS`` on a (rows, cols) map: box ``[c - b // 2, c + b - b // 2)``.

    MONAI's ``ProbNMS`` takes ``argmax`` in C order of the (rows, cols) map, so among equal
    maxima the smallest row wins, then the smallest column. With an even ``box_size`` the box
    equals NCRF's with ``radius = box_size // 2``.

    Args:
        prob_map: (rows, cols) = (y, x) probabilities at pyramid ``level``.
        level: Level of the map.
        box_size: Side of the suppressed box in cells (MONAI default 48); must be >= 1.
        threshold: Stop when the remaining maximum is <= this value (>= 0).
        size: Level-0 (w, h) of the slide to clip coordinates to, as in :func:`nms`.

    Returns:
        (n, 3) float64 (prob, x, y) at level-0 cell centres, highest first.

    Raises:
        EvaluationError: The map is not 2-D or not finite, or box/threshold are invalid.
    """
    if box_size < 1:
        raise EvaluationError(f"NMS box size must be >= 1 cell, got {box_size}")
    lower = box_size // 2
    return _greedy_nms(
        prob_map, level, lower, box_size - lower, threshold, x_major=False, size=size
    )


def read_detections(path: str | Path) -> Detections:
    """Read a CAMELYON16 detections CSV of ``prob,x,y`` lines (level-0 pixels, x = column).

    Accepts an optional ``prob,x,y`` header line, blank lines (skipped) and an empty file
    (no detections). Coordinates may be integers or decimals.

    Args:
        path: CSV file.

    Returns:
        (n, 3) float64 array of (prob, x, y).

    Raises:
        EvaluationError: A line is malformed (names file and line number), a probability is
            outside [0, 1], or a coordinate is negative or not finite.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:  # a map (.npy) is not a detections CSV
        raise EvaluationError(f"{path}: cannot read detections: {exc}") from exc
    rows: list[tuple[float, float, float]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if lineno == 1 and line.replace(" ", "").lower() == CSV_HEADER:
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3:
            raise EvaluationError(
                f"{path}:{lineno}: expected 3 fields 'prob,x,y', got {len(fields)}: {line!r}"
            )
        try:
            prob, x, y = (float(f) for f in fields)
        except ValueError:
            raise EvaluationError(f"{path}:{lineno}: not numbers 'prob,x,y': {line!r}") from None
        if not (0.0 <= prob <= 1.0):
            raise EvaluationError(f"{path}:{lineno}: probability {prob} is outside [0, 1]")
        if not (math.isfinite(x) and math.isfinite(y)) or x < 0 or y < 0:
            raise EvaluationError(
                f"{path}:{lineno}: coordinates must be finite and >= 0, got x={x}, y={y}"
            )
        rows.append((prob, x, y))
    if not rows:
        return empty_detections()
    return np.asarray(rows, dtype=np.float64)


def write_detections(path: str | Path, detections: npt.ArrayLike, header: bool = False) -> Path:
    """Write ``prob,x,y`` lines; no header by default, as CAMELYON16 submissions and NCRF.

    The organisers' reader parses every line as numbers, so a header would break it;
    :func:`read_detections` accepts both. Probabilities keep full precision (NCRF rounds to
    five decimals, which creates ties that change the curve).

    Args:
        path: Output CSV.
        detections: (n, 3) (prob, x, y) array.
        header: Write a ``prob,x,y`` first line.

    Returns:
        The path written.
    """
    path = Path(path)
    arr = np.asarray(detections, dtype=np.float64).reshape(-1, 3)
    lines = [CSV_HEADER] if header else []
    lines += [",".join(format_number(v) for v in (p, x, y)) for p, x, y in arr]
    write_text(path, "".join(line + "\n" for line in lines))
    return path
