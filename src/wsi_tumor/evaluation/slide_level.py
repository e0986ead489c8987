"""CAMELYON16's slide-level task: tumour vs normal slides, ROC AUC of a per-slide score.

Each slide's score is, by default, its probability map's maximum (``map-max``: the
challenge's baseline), the highest lesion-candidate probability of its CSV
(``detection-max``, for submissions without maps), or the tumour probability the slide
classifier gave it (``classifier``, from ``<slide>.json``; see
:mod:`wsi_tumor.evaluation.slide_classifier`). The reference labels come from a
``testing.csv``-style file: ``slide,label`` lines (a header line is optional), label
``tumor``/``normal`` (any case) or ``1``/``0``; CAMELYON16's own ``reference.csv`` (extra
columns after the label) reads the same way.

The AUC is the Mann-Whitney statistic with ties counted half, which is exactly what
scikit-learn's ``roc_auc_score`` computes (tested against it).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from wsi_tumor.errors import EvaluationError

SCORE_RULES: Final = ("map-max", "detection-max", "classifier")
_TUMOUR = {"tumor", "tumour", "1", "positive"}
_NORMAL = {"normal", "0", "negative"}


@dataclass(frozen=True)
class SlideLevel:
    """The slide-level result.

    Attributes:
        auc: ROC AUC of the scores for the labels.
        score_rule: How each slide's score was made.
        slides: Slide names, in order.
        labels: 1 tumour, 0 normal, per slide.
        scores: Per slide.
        fpr: ROC curve false positive rates (from (0, 0) to (1, 1)).
        tpr: ROC curve true positive rates.
        auc_by_score: The AUC of every score rule the detections allow, this one included.
    """

    auc: float
    score_rule: str
    slides: list[str]
    labels: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]
    fpr: npt.NDArray[np.float64]
    tpr: npt.NDArray[np.float64]
    auc_by_score: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``slide_level`` block of ``froc.json``."""
        return {
            "auc": self.auc,
            "score_rule": self.score_rule,
            "auc_by_score": self.auc_by_score,
            "tumour_slides": int(self.labels.sum()),
            "normal_slides": int(len(self.labels) - self.labels.sum()),
            "per_slide": [
                {"slide": s, "label": "tumor" if label else "normal", "score": float(score)}
                for s, label, score in zip(self.slides, self.labels, self.scores, strict=True)
            ],
        }


def read_reference(path: str | Path) -> dict[str, int]:
    """Slide name -> 1 (tumour) or 0 (normal) from a ``slide,label`` CSV.

    Raises:
        EvaluationError: the file is missing, or a line's label is not tumour or normal
            (file:line named).
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: reference file does not exist")
    labels: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for number, fields in enumerate(csv.reader(handle), start=1):
            fields = [f.strip() for f in fields]
            if not fields or not any(fields):
                continue
            if len(fields) < 2 or not fields[0]:
                raise EvaluationError(f"{path}:{number}: expected 'slide,label', found {fields}")
            slide, label = Path(fields[0]).stem, fields[1].lower()
            if label in _TUMOUR:
                labels[slide] = 1
            elif label in _NORMAL:
                labels[slide] = 0
            elif number == 1:
                continue  # a header line
            else:
                raise EvaluationError(
                    f"{path}:{number}: label {fields[1]!r} is neither tumor nor normal"
                )
    if not labels:
        raise EvaluationError(f"{path}: no slide labels in the reference file")
    return labels


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve, ties counted half (= sklearn's ``roc_auc_score``).

    Raises:
        EvaluationError: when one class is missing (the AUC is undefined).
    """
    from scipy.stats import rankdata

    y = np.asarray(labels, np.int64)
    s = np.asarray(scores, np.float64)
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if positives == 0 or negatives == 0:
        raise EvaluationError(
            f"slide-level AUC needs tumour and normal slides; got {positives} tumour and "
            f"{negatives} normal"
        )
    ranks = rankdata(s)  # average ranks: a tie between classes counts one half
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def roc_points(
    labels: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(fpr, tpr) of the ROC curve, one point per distinct score, from (0, 0) to (1, 1)."""
    y = np.asarray(labels, np.int64)
    s = np.asarray(scores, np.float64)
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    positives, negatives = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    return np.r_[0.0, fps / negatives], np.r_[0.0, tps / positives]


def slide_score(detections_file: Path, rule: str) -> float:
    """One slide's score: its map's maximum, or its best candidate's probability.

    Raises:
        EvaluationError: ``map-max`` and the slide has no ``.npy`` map beside its CSV.
    """
    if rule == "map-max":
        map_path = detections_file.with_suffix(".npy")
        if not map_path.is_file():
            raise EvaluationError(
                f"{map_path}: no probability map for the slide-level score; use "
                "--slide-score detection-max for CSV-only detections"
            )
        return float(np.max(np.load(map_path, allow_pickle=False), initial=0.0))
    if rule == "detection-max":
        from wsi_tumor.evaluation.nms import read_detections

        detections = read_detections(detections_file)
        return float(detections[:, 0].max()) if len(detections) else 0.0
    if rule == "classifier":
        report = detections_file.with_suffix(".json")
        try:
            scored = json.loads(report.read_text(encoding="utf-8")).get("slide_classifier") or {}
        except (OSError, ValueError, AttributeError) as exc:
            raise EvaluationError(f"{report}: cannot read the slide's report ({exc})") from None
        if scored.get("probability") is None:
            raise EvaluationError(
                f"{report}: no slide classifier probability "
                f"({scored.get('reason', 'written before slide classifiers existed')})"
            )
        return float(scored["probability"])
    raise EvaluationError(f"unknown slide score {rule!r}; choose one of {', '.join(SCORE_RULES)}")


def evaluate_slide_level(
    detection_files: list[Path], reference: dict[str, int], rule: str = "map-max"
) -> SlideLevel:
    """Score every referenced slide that has detections and compute the AUC.

    Raises:
        EvaluationError: a referenced slide has no detections file, or one class is missing.
    """
    by_slide = {path.stem: path for path in detection_files}
    missing = sorted(set(reference) - set(by_slide))
    if missing:
        raise EvaluationError(
            f"slides in the reference without detections: {', '.join(missing[:10])}"
        )
    slides = sorted(reference)
    labels = np.asarray([reference[s] for s in slides], np.int64)
    scores = np.asarray([slide_score(by_slide[s], rule) for s in slides], np.float64)
    fpr, tpr = roc_points(labels, scores)
    aucs = {rule: roc_auc(labels, scores)}
    for other in SCORE_RULES:
        if other != rule:
            try:
                others = [slide_score(by_slide[s], other) for s in slides]
            except EvaluationError:
                continue  # this rule needs outputs the detections do not have
            aucs[other] = roc_auc(labels, others)
    return SlideLevel(aucs[rule], rule, slides, labels, scores, fpr, tpr, aucs)
