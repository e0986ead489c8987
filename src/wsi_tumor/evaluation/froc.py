"""FROC of lesion detections, following the CAMELYON16 organisers' ``Evaluation_FROC.py``.

Per slide, each detection (prob, x, y) is looked up in the evaluation mask at
``(floor(y / 2**level), floor(x / 2**level))``: label 0 is a false positive, an ITC label
is ignored, any other label is a hit and the lesion keeps its hits' maximum probability.
On a normal slide every detection is a false positive. The curve thresholds every distinct
probability but the smallest; the score averages the sensitivities interpolated at 0.25,
0.5, 1, 2, 4 and 8 false positives per slide.

Reproduced quirk: the organisers (and MONAI) store lesion probabilities in a float32 array
while false-positive probabilities stay float64. Thresholds are the distinct values of both
(so a lesion and a false positive with the "same" probability can give two thresholds), and
numpy compares the float32 lesion array with each threshold rounded to float32. We do the
same, so our numbers equal theirs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from wsi_tumor.errors import EvaluationError

if TYPE_CHECKING:
    from wsi_tumor.evaluation.masks import LabelMask

log = logging.getLogger(__name__)

EVAL_FPS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""False positives per slide at which sensitivity is averaged (the challenge's)."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SlideResult:
    """What one slide contributes to the FROC curve.

    Attributes:
        name: Slide name.
        is_tumour: Whether the slide has ground truth lesions (a mask or XML).
        fp_probs: Probabilities of false-positive detections (float64).
        lesion_probs: One entry per label 1..n, ITCs included: the maximum probability of
            the lesion's hits, 0 when missed or ITC (float32, as the organisers').
        itc_labels: Labels excluded as isolated tumour cells.
        num_detections: Detections evaluated.
        num_tp_detections: Detections that hit a non-ITC lesion.
        num_itc_detections: Detections that hit an ITC (neither TP nor FP).
    """

    name: str
    is_tumour: bool
    fp_probs: FloatArray
    lesion_probs: npt.NDArray[np.float32]
    itc_labels: tuple[int, ...]
    num_detections: int
    num_tp_detections: int
    num_itc_detections: int

    @property
    def num_lesions(self) -> int:
        """Lesions to detect: labels minus ITCs."""
        return len(self.lesion_probs) - len(self.itc_labels)

    @property
    def num_fp(self) -> int:
        """False-positive detections."""
        return len(self.fp_probs)

    @property
    def num_lesions_hit(self) -> int:
        """Non-ITC lesions with at least one hit of probability > 0."""
        itc = set(self.itc_labels)
        return sum(1 for i, p in enumerate(self.lesion_probs, start=1) if p > 0 and i not in itc)


def detection_labels(
    name: str, det: FloatArray, label_arr: npt.NDArray[np.integer], level: int
) -> npt.NDArray[np.int64]:
    """The evaluation-mask label under each (prob, x, y) detection (0: a false positive).

    Raises:
        EvaluationError: A detection falls outside the mask (more than the one partial cell
            a rounded-down mask level may lack).
    """
    scale = float(2**level)
    rows = np.floor(det[:, 2] / scale).astype(np.int64)
    cols = np.floor(det[:, 1] / scale).astype(np.int64)
    n_rows, n_cols = label_arr.shape
    # A mask level whose size was rounded down lacks the slide's last partial cell: a detection
    # there (the organisers' script raises IndexError) counts in the last cell. Further out is
    # an error.
    rows[rows == n_rows] = n_rows - 1
    cols[cols == n_cols] = n_cols - 1
    outside = (rows < 0) | (rows >= n_rows) | (cols < 0) | (cols >= n_cols)
    if np.any(outside):
        i = int(np.argmax(outside))
        raise EvaluationError(
            f"{name}: detection {i + 1} at x={det[i, 1]:g}, y={det[i, 2]:g} (mask cell "
            f"row {rows[i]}, col {cols[i]}) is outside the level-{level} mask of "
            f"{n_cols}x{n_rows} (w x h) cells"
        )
    return label_arr[rows, cols] if len(det) else np.zeros(0, dtype=np.int64)


def evaluate_slide(
    name: str,
    detections: npt.ArrayLike,
    labels: LabelMask | None,
    itc: Sequence[int] = (),
    level: int = 5,
) -> SlideResult:
    """Split one slide's detections into false positives and lesion hits.

    Args:
        name: Slide name (for messages).
        detections: (n, 3) (prob, x, y) at level 0, x = column.
        labels: Evaluation mask from :func:`~wsi_tumor.evaluation.masks.evaluation_mask`
            at ``level``, or None for a normal slide.
        itc: ITC labels of ``labels``.
        level: Level of ``labels``.

    Returns:
        The slide's :class:`SlideResult`.

    Raises:
        EvaluationError: A detection falls outside the mask (more than the one partial cell
            a rounded-down mask level may lack).
    """
    det = np.asarray(detections, dtype=np.float64).reshape(-1, 3)
    probs = det[:, 0]
    if labels is None:
        return SlideResult(
            name=name,
            is_tumour=False,
            fp_probs=probs.copy(),
            lesion_probs=np.zeros(0, dtype=np.float32),
            itc_labels=(),
            num_detections=len(det),
            num_tp_detections=0,
            num_itc_detections=0,
        )
    label_arr = np.asarray(labels)
    hit = detection_labels(name, det, label_arr, level)
    max_label = int(label_arr.max()) if label_arr.size else 0
    itc_set = {int(i) for i in itc}
    is_itc = np.isin(hit, sorted(itc_set)) if itc_set else np.zeros(len(hit), dtype=bool)
    is_tp = (hit > 0) & ~is_itc
    lesion = np.zeros(max_label, dtype=np.float64)
    np.maximum.at(lesion, hit[is_tp] - 1, probs[is_tp])
    return SlideResult(
        name=name,
        is_tumour=True,
        fp_probs=probs[hit == 0].copy(),
        # float32 storage as in the organisers' TP_probs array (see module docstring)
        lesion_probs=lesion.astype(np.float32),
        itc_labels=tuple(sorted(itc_set)),
        num_detections=len(det),
        num_tp_detections=int(is_tp.sum()),
        num_itc_detections=int(is_itc.sum()),
    )


def froc_curve(results: Sequence[SlideResult]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """FROC curve points over all slides, as the organisers' ``computeFROC``.

    For each distinct probability t among all false positives and lesion entries except
    the smallest, count false positives >= t and lesions >= t; then append (0, 0).

    Args:
        results: Every evaluated slide (normal ones count in the FP rate).

    Returns:
        (fps_per_slide, sensitivity, thresholds), thresholds ascending with NaN for the
        appended (0, 0) point.

    Raises:
        EvaluationError: No slides, or no non-ITC lesion in the ground truth.
    """
    if not results:
        raise EvaluationError("no slides to evaluate")
    num_lesions = sum(r.num_lesions for r in results)
    if num_lesions == 0:
        raise EvaluationError(
            "the ground truth has no lesion larger than an ITC; sensitivity is undefined"
        )
    fp = np.sort(np.concatenate([np.zeros(0), *(r.fp_probs for r in results)]))
    tp = np.sort(np.concatenate([np.zeros(0, np.float32), *(r.lesion_probs for r in results)]))
    thresholds = np.unique(np.concatenate([fp, tp.astype(np.float64)]))[1:]
    fps = len(fp) - np.searchsorted(fp, thresholds, side="left")
    # the organisers compare their float32 lesion array with float32(threshold)
    tps = len(tp) - np.searchsorted(tp, thresholds.astype(np.float32), side="left")
    fps_per_slide = np.append(fps, 0) / float(len(results))
    sensitivity = np.append(tps, 0) / float(num_lesions)
    return fps_per_slide, sensitivity, np.append(thresholds, np.nan)


def froc_score(
    fps_per_slide: FloatArray,
    sensitivity: FloatArray,
    eval_fps: Sequence[float] = EVAL_FPS,
) -> tuple[float, dict[float, float]]:
    """Average sensitivity at ``eval_fps`` false positives per slide.

    Linear interpolation with ``np.interp`` on the reversed curve, exactly as the
    organisers (beyond the curve's largest FP rate the last sensitivity holds).

    Args:
        fps_per_slide: Curve x values from :func:`froc_curve` (non-increasing).
        sensitivity: Curve y values.
        eval_fps: FP rates to average over.

    Returns:
        (score, {fp_rate: sensitivity}).
    """
    interp = np.interp(list(eval_fps), fps_per_slide[::-1], sensitivity[::-1])
    at = {float(f): float(s) for f, s in zip(eval_fps, interp, strict=True)}
    return float(np.mean(interp)), at
