"""The slide-level task: AUC against scikit-learn, reference files, wsi-froc --reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_tumor.errors import EvaluationError
from wsi_tumor.evaluation.slide_level import (
    evaluate_slide_level,
    read_reference,
    roc_auc,
    roc_points,
)

CASES = [
    # perfect, inverted, all tied, ties across classes, ties within a class, a single pair
    ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]),
    ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]),
    ([0, 1, 0, 1, 1], [0.5, 0.5, 0.5, 0.5, 0.5]),
    ([0, 1, 0, 1, 0, 1], [0.3, 0.3, 0.7, 0.7, 0.1, 0.9]),
    ([1, 1, 0, 0, 0], [0.6, 0.6, 0.2, 0.2, 0.6]),
    ([0, 1], [0.4, 0.4]),
]


@pytest.mark.parametrize(("labels", "scores"), CASES)
def test_auc_equals_scikit_learn_including_ties(labels, scores) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr = roc_points(labels, scores)
    ref_fpr, ref_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)


def test_hand_worked_auc() -> None:
    # pairs (tumour, normal): (0.9 vs 0.3, 0.7) wins twice, (0.3 vs 0.3) half, (0.3 vs 0.7) 0
    assert roc_auc([1, 1, 0, 0], [0.9, 0.3, 0.3, 0.7]) == pytest.approx(2.5 / 4)


def test_auc_needs_both_classes() -> None:
    with pytest.raises(EvaluationError, match="needs tumour and normal slides"):
        roc_auc([1, 1], [0.2, 0.3])


def test_reference_files(tmp_path: Path) -> None:
    ours = tmp_path / "testing.csv"
    ours.write_text("slide,label\ntest_001,tumor\ntest_002,normal\n")
    assert read_reference(ours) == {"test_001": 1, "test_002": 0}
    organisers = tmp_path / "reference.csv"  # CAMELYON16: no header, extra columns
    organisers.write_text("Test_001,Tumor,Macro,Primary\nTest_002,Normal\n")
    assert read_reference(organisers) == {"Test_001": 1, "Test_002": 0}
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,label\ntest_001,tumor\ntest_002,maybe\n")
    with pytest.raises(EvaluationError, match=r"bad.csv:3: label 'maybe'"):
        read_reference(bad)


def test_scores_from_maps_or_candidates(tmp_path: Path) -> None:
    for name, peak in (("a", 0.9), ("b", 0.4), ("c", 0.7)):
        prob = np.zeros((4, 4), np.float32)
        prob[1, 2] = peak
        np.save(tmp_path / f"{name}.npy", prob)
        (tmp_path / f"{name}.csv").write_text(f"{peak / 2},64,96\n")
    files = sorted(tmp_path.glob("*.csv"))
    reference = {"a": 1, "b": 0, "c": 0}
    by_map = evaluate_slide_level(files, reference)
    np.testing.assert_allclose(by_map.scores, [0.9, 0.4, 0.7])
    assert by_map.auc == 1.0 and by_map.to_json()["per_slide"][0] == {
        "slide": "a", "label": "tumor", "score": pytest.approx(0.9)
    }  # fmt: skip
    by_candidates = evaluate_slide_level(files, reference, "detection-max")
    np.testing.assert_allclose(by_candidates.scores, [0.45, 0.2, 0.35])
    with pytest.raises(EvaluationError, match="without detections: d"):
        evaluate_slide_level(files, {**reference, "d": 1})
