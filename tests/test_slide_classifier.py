"""Slide-level features, the slide classifier's file, the fitting command and wsi-froc's AUC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import uniform_filter
from skimage.measure import label, regionprops

from wsi_tumor import contract, fit_classifier
from wsi_tumor.client.outputs import SlideOutputs, write_npy
from wsi_tumor.errors import ModelMismatchError
from wsi_tumor.evaluation.slide_classifier import (
    SlideClassifier,
    read_classifier,
    write_classifier,
)
from wsi_tumor.evaluation.slide_classifier import (
    fit_classifier as fit,
)
from wsi_tumor.evaluation.slide_features import FEATURE_NAMES, map_features
from wsi_tumor.fileio import write_json
from wsi_tumor.serving.repository import write_repository

CELL_UM = contract.PATCH_STRIDE * contract.MODEL_MPP


def test_features_of_a_hand_built_map() -> None:
    grid = np.zeros((40, 50))
    grid[5:9, 5:15] = 0.95  # 40 cells, a 4 x 10 region above 0.9
    grid[30, 30] = 0.6  # a second region above 0.5, one cell
    features = map_features(grid, CELL_UM)
    assert list(features) == list(FEATURE_NAMES)
    cell_k_um2 = CELL_UM**2 / 1000.0
    assert features["max"] == pytest.approx(0.95)
    assert features["max_logit"] == pytest.approx(np.log(0.95 / 0.05))
    assert features["smoothed_max"] == pytest.approx(uniform_filter(grid, 3, mode="constant").max())
    assert features["top_mean"] == pytest.approx(0.95)  # the 16 highest cells are all 0.95
    assert features["regions_050"] == 2
    assert features["log_area_050"] == pytest.approx(np.log10(1 + 41 * cell_k_um2))
    assert features["log_area_090"] == pytest.approx(np.log10(1 + 40 * cell_k_um2))
    assert features["log_largest_050"] == pytest.approx(np.log10(1 + 40 * cell_k_um2))
    major = max(regionprops(label(grid > 0.5)), key=lambda r: r.area).axis_major_length
    assert features["largest_050_extent_mm"] == pytest.approx(major * CELL_UM / 1000)


def test_features_refuse_a_bad_map() -> None:
    from wsi_tumor.errors import EvaluationError

    with pytest.raises(EvaluationError, match="values in"):
        map_features(np.full((3, 3), 1.5))


def _rows(rng: np.random.Generator, n: int, tumour: bool) -> list[dict[str, float]]:
    rows = []
    for _ in range(n):
        grid = rng.uniform(0, 0.3, (30, 30))
        if tumour:
            side = int(rng.integers(4, 9))
            grid[2 : 2 + side, 2 : 2 + side] = rng.uniform(0.92, 1.0)
        else:
            grid[10, 10] = rng.uniform(0.6, 0.99)  # one false positive cell
        rows.append(map_features(grid, CELL_UM))
    return rows


def test_fit_separates_wide_lesions_from_single_false_positives(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = _rows(rng, 6, True) + _rows(rng, 6, False)
    classifier = fit(rows, [1] * 6 + [0] * 6, fitted_on={"slides": 12})
    scores = [classifier.probability(r) for r in rows]
    assert min(scores[:6]) > max(scores[6:])
    path = write_classifier(classifier, tmp_path / "slide_classifier.json")
    back = read_classifier(path)
    assert back == classifier
    assert [back.probability(r) for r in rows] == pytest.approx(scores)


def test_fit_needs_two_slides_of_each_class() -> None:
    rows = _rows(np.random.default_rng(1), 3, True)
    with pytest.raises(ValueError, match="two tumour and two normal"):
        fit(rows, [1, 1, 0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 99}, "version 99"),
        ({"features_version": 0}, "features_version 0"),
        ({"features": ["max", "mystery"]}, "mystery"),
        ({"format": "other"}, "not a wsi-tumor slide classifier"),
        ({"coef": [1.0]}, "do not match"),
    ],
)
def test_mismatched_file_is_one_line_naming_it(tmp_path: Path, change: dict, message: str) -> None:
    rng = np.random.default_rng(2)
    classifier = fit(_rows(rng, 3, True) + _rows(rng, 3, False), [1] * 3 + [0] * 3)
    data = {**classifier.to_json(), **change}
    path = tmp_path / "slide_classifier.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelMismatchError, match=message) as caught:
        read_classifier(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def _maps(root: Path, slides: dict[str, bool], seed: int) -> Path:
    """wsi-infer-style outputs (map, empty side files, report with checksums) per slide."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for slide, tumour in slides.items():
        grid = rng.uniform(0, 0.3, (30, 30)).astype(np.float32)
        if tumour:
            grid[3:10, 3:10] = 0.97
        else:
            grid[15, 15] = 0.9
        outputs = SlideOutputs(root, slide)
        write_npy(outputs.prob_map, grid)
        for path in outputs.all_paths()[1:-1]:
            path.write_bytes(b"")
        write_json(outputs.report, {"map_cell_um": CELL_UM, "checksums": outputs.checksums()})
    return root


def test_fit_command_uses_no_test_slide_and_writes_the_repository(tmp_path: Path) -> None:
    slides = {f"tumor_00{i}": True for i in range(1, 4)} | {
        f"normal_00{i}": False for i in range(1, 4)
    }
    tests = {"test_001": True, "test_002": False}
    maps = _maps(tmp_path / "maps", slides | tests, 3)
    lines = ["slide,label,split"]
    lines += [f"{s},{'tumor' if t else 'normal'},valid" for s, t in slides.items()]
    lines += [f"{s},{'tumor' if t else 'normal'},test" for s, t in tests.items()]
    labels = tmp_path / "slides.csv"
    labels.write_text("\n".join(lines) + "\n")
    repositories = []
    for name, text in (("honest", labels.read_text()), ("poisoned", None)):
        repo = tmp_path / name
        write_repository(repo, "python-onnxruntime")
        if text is None:  # the test slides' labels flipped: the fit must not change
            poisoned = labels.read_text().replace("test_001,tumor", "test_001,normal")
            poisoned = poisoned.replace("test_002,normal", "test_002,tumor")
            labels.write_text(poisoned)
        argv = ["--maps", str(maps), "--labels", str(labels), "--repository", str(repo)]
        assert fit_classifier.main([*argv, "--quiet"]) == 0
        repositories.append(repo)
    files = [(r / contract.SLIDE_CLASSIFIER_FILE).read_text() for r in repositories]
    assert files[0] == files[1]
    classifier = read_classifier(repositories[0] / contract.SLIDE_CLASSIFIER_FILE)
    assert sorted(classifier.fitted_on["slides"]) == sorted(slides)
    # the detectors' configs carry the same classifier as their parameter
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    for model in (contract.ENSEMBLE_MODEL, contract.DENSE_MODEL):
        config = text_format.Parse(
            (repositories[0] / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
        )
        text = config.parameters[contract.SLIDE_CLASSIFIER_PARAMETER].string_value
        assert SlideClassifier.from_text(text, "config") == classifier
    # a re-export of other weights drops the classifier fitted on the old ones
    write_repository(repositories[0], "python-onnxruntime")
    assert not (repositories[0] / contract.SLIDE_CLASSIFIER_FILE).exists()


def test_slide_level_reports_the_classifier_auc_beside_the_map_maximum(tmp_path: Path) -> None:
    from wsi_tumor.errors import EvaluationError
    from wsi_tumor.evaluation.slide_level import evaluate_slide_level

    slides = {"test_001": True, "test_002": False, "test_003": True, "test_004": False}
    maps = _maps(tmp_path / "pred", slides, 4)
    reference = {s: int(t) for s, t in slides.items()}
    files = [maps / f"{s}.csv" for s in slides]
    for path in files:
        path.write_text("")
    # no classifier in the reports yet: only the map maximum (and the empty candidates)
    result = evaluate_slide_level(files, reference)
    assert set(result.auc_by_score) == {"map-max", "detection-max"}
    with pytest.raises(EvaluationError, match="no slide classifier probability"):
        evaluate_slide_level(files, reference, "classifier")
    probabilities = {"test_001": 0.9, "test_002": 0.2, "test_003": 0.1, "test_004": 0.3}
    for slide, probability in probabilities.items():
        report = maps / f"{slide}.json"
        data = json.loads(report.read_text())
        data["slide_classifier"] = {"probability": probability}
        report.write_text(json.dumps(data))
    # map maxima: tumour 0.97, 0.97, normal 0.9, 0.9 -> 1.0; classifier 0.9, 0.1 vs 0.2, 0.3
    result = evaluate_slide_level(files, reference)
    assert result.auc == pytest.approx(1.0)
    assert result.auc_by_score["classifier"] == pytest.approx(0.5)
    assert evaluate_slide_level(files, reference, "classifier").auc == pytest.approx(0.5)
    assert result.to_json()["auc_by_score"] == result.auc_by_score
