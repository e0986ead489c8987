"""FROC with the CAMELYON16 protocol: hand-built masks and detections, answers worked by hand.

Reference numbers at level 5 with 0.243 um/px: grow threshold 75 / (0.243 * 32 * 2) = 4.82 px,
ITC threshold 275 / (0.243 * 32) = 35.37 px. A mask cell (row, col) at level 5 is hit by the
level-0 point x = col * 32 + 16, y = row * 32 + 16.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from wsi_tumor.errors import EvaluationError
from wsi_tumor.evaluation.cli import main
from wsi_tumor.evaluation.evaluate import FrocConfig, evaluate_directory
from wsi_tumor.evaluation.froc import evaluate_slide, froc_curve, froc_score
from wsi_tumor.evaluation.masks import (
    binarise_mask,
    evaluation_mask,
    grow_threshold_px,
    itc_labels,
    itc_threshold_px,
    read_mask_level,
)

CELL = 32  # level-5 downsample


def pt(row: int, col: int) -> tuple[int, int]:
    """Level-0 (x, y) at the centre of level-5 cell (row, col)."""
    return col * CELL + 16, row * CELL + 16


def write_mask(path: Path, level5: np.ndarray, subifds: bool = True, levels: int = 6) -> None:
    """Pyramidal uint8 mask TIFF with levels 0..levels-1 whose level 5 is ``level5``."""
    base = np.repeat(np.repeat(level5.astype(np.uint8), CELL, axis=0), CELL, axis=1)
    pyramid = [base[:: 2**k, :: 2**k] for k in range(levels)]
    with tifffile.TiffWriter(path) as tw:
        if subifds:
            tw.write(pyramid[0], subifds=levels - 1, tile=(256, 256), compression="zlib")
            for lvl in pyramid[1:]:
                tw.write(lvl, subfiletype=1, compression="zlib")
        else:
            for k, lvl in enumerate(pyramid):
                tw.write(lvl, subfiletype=1 if k else 0, compression="zlib")


def write_csv(path: Path, rows: list[tuple[float, int, int]]) -> None:
    path.write_text("".join(f"{p},{x},{y}\n" for p, x, y in rows))


# --- masks -------------------------------------------------------------------------------------
def test_thresholds_use_mpp() -> None:
    assert grow_threshold_px(5) == pytest.approx(75 / (0.243 * 64))  # 4.8225
    assert itc_threshold_px(5) == pytest.approx(275 / (0.243 * 32))  # 35.365
    # mpp 75/320 um/px makes the grow threshold exactly 75 / (0.234375 * 64) = 5 px
    assert grow_threshold_px(5, mpp=75 / 320) == 5.0
    assert itc_threshold_px(6, mpp=0.5) == pytest.approx(275 / 32)


def test_grow_distance_boundary_is_strict() -> None:
    tumour = np.zeros((21, 21), dtype=bool)
    tumour[10, 10] = True
    labels = evaluation_mask(tumour, level=5, mpp=75 / 320)  # threshold exactly 5 px
    assert labels[10, 14] == 1  # distance 4 < 5
    assert labels[10, 15] == 0  # distance 5: not < 5
    assert labels[13, 14] == 0  # distance sqrt(3^2 + 4^2) = 5
    assert labels[13, 13] == 1  # distance sqrt(18) = 4.24
    # with 0.2 um/px the threshold is 75 / (0.2 * 64) = 5.86 px: distance 5 joins
    assert evaluation_mask(tumour, level=5, mpp=0.2)[10, 15] == 1


def test_fill_holes_and_8_connectivity() -> None:
    # mpp 75 / 32 = 2.34375 makes the grow threshold 75 / (2.34375 * 64) = 0.5 px: no growth
    tumour = np.zeros((12, 12), dtype=bool)
    tumour[1, 1] = tumour[2, 2] = True  # diagonal neighbours: one region with 8-connectivity
    tumour[1, 5] = True  # two columns from (1, 3)... nothing there: its own region
    tumour[6:11, 6:11] = True
    tumour[8, 8] = False  # a hole: filled, same region
    labels = evaluation_mask(tumour, level=5, mpp=75 / 32)
    assert labels[1, 1] == labels[2, 2] == 1
    assert labels[1, 5] == 2
    assert labels[8, 8] == labels[6, 6] == 3
    assert labels.max() == 3 and labels[1, 2] == 0


def test_itc_by_major_axis_length() -> None:
    # A 1 x n line has major axis 4 * sqrt((n^2 - 1) / 12): n = 30 -> 34.62 < 35.37 (ITC),
    # n = 31 -> 35.78 >= 35.37 (lesion).
    labels = np.zeros((10, 40), dtype=np.int64)
    labels[2, 2:32] = 1  # 30 pixels
    labels[6, 2:33] = 2  # 31 pixels
    assert itc_labels(labels, level=5) == [1]
    # with 0.2 um/px the threshold is 275 / 6.4 = 42.97: both are ITCs
    assert itc_labels(labels, level=5, mpp=0.2) == [1, 2]


def test_binarise_0_255_and_0_1_masks_agree() -> None:
    m = np.zeros((4, 4), dtype=np.uint8)
    m[1:3, 1:3] = 1
    np.testing.assert_array_equal(binarise_mask(m), binarise_mask(m * 255))
    assert binarise_mask(m).sum() == 4
    with pytest.raises(EvaluationError, match=r"neither 0/255"):
        binarise_mask(m * 2)


def test_read_mask_level_pages_and_subifds(tmp_path: Path) -> None:
    level5 = np.zeros((20, 30), dtype=np.uint8)
    level5[3:7, 10:25] = 255
    for subifds in (True, False):
        path = tmp_path / f"m{subifds}.tif"
        write_mask(path, level5, subifds=subifds)
        np.testing.assert_array_equal(read_mask_level(path, 5), level5)


def test_mask_without_level_5_names_its_levels(tmp_path: Path) -> None:
    path = tmp_path / "shallow_mask.tif"
    write_mask(path, np.zeros((4, 4), dtype=np.uint8), levels=4)
    with pytest.raises(EvaluationError, match=r"no level 5 .*downsamples \[1.0, 2.0, 4.0, 8.0\]"):
        read_mask_level(path, 5)


# --- per-slide and curve ---------------------------------------------------------------------
def lesion_labels() -> tuple[np.ndarray, list[int]]:
    """Labels 1 (lesion), 2 (lesion), 3 (ITC) built directly (no growth)."""
    labels = np.zeros((10, 10), dtype=np.int64)
    labels[0:3, 0:3] = 1
    labels[6:9, 6:9] = 2
    labels[0, 9] = 3
    return labels, [3]


def test_several_hits_keep_max_and_itc_hits_are_ignored() -> None:
    labels, itc = lesion_labels()
    det = [
        (0.4, *pt(0, 0)),  # lesion 1
        (0.9, *pt(2, 2)),  # lesion 1 again: lesion 1 keeps 0.9, no FP
        (0.6, *pt(1, 1)),  # lesion 1 a third time
        (0.8, *pt(0, 9)),  # ITC: neither TP nor FP
        (0.3, *pt(5, 5)),  # background: FP
    ]
    r = evaluate_slide("t", det, labels, itc, level=5)
    np.testing.assert_allclose(r.fp_probs, [0.3])
    np.testing.assert_allclose(r.lesion_probs, np.array([0.9, 0.0, 0.0], dtype=np.float32))
    assert (r.num_lesions, r.num_lesions_hit, r.num_tp_detections, r.num_itc_detections) == (
        2, 1, 3, 1,
    )  # fmt: skip


def test_normal_slide_all_fp_and_empty_slide() -> None:
    r = evaluate_slide("n", [(0.9, 10**6, 10**6), (0.2, 0, 0)], None)
    np.testing.assert_allclose(r.fp_probs, [0.9, 0.2])
    assert r.num_lesions == 0
    e = evaluate_slide("e", np.zeros((0, 3)), None)
    assert (e.num_detections, e.num_fp) == (0, 0)


def test_x_is_column() -> None:
    labels = np.zeros((10, 10), dtype=np.int64)
    labels[1, 8] = 1  # row 1, col 8
    hit = evaluate_slide("t", [(0.9, *pt(1, 8))], labels)
    swapped = evaluate_slide("t", [(0.9, *pt(8, 1))], labels)
    assert (hit.num_lesions_hit, hit.num_fp) == (1, 0)
    assert (swapped.num_lesions_hit, swapped.num_fp) == (0, 1)


def test_detection_outside_mask() -> None:
    labels, itc = lesion_labels()  # 10 columns at level 5: x in [0, 320)
    # col 10 is the one partial cell a rounded-down mask level may lack: it counts in col 9
    edge = evaluate_slide("t", [(0.5, 16, 16), (0.5, 320, 16)], labels, itc)
    assert edge.num_detections == 2
    with pytest.raises(EvaluationError, match=r"t: detection 2 at x=352, y=16 .* outside"):
        evaluate_slide("t", [(0.5, 16, 16), (0.5, 352, 16)], labels, itc)  # col 11 of 10


def test_float32_lesion_quirk_matches_organisers() -> None:
    # One slide: lesion 1 hit at 0.1, lesion 2 missed, one FP at 0.1. float32(0.1) =
    # 0.10000000149 > 0.1, so thresholds are [0.1, 0.10000000149]:
    #   t = 0.1:          FP 1, lesions >= float32(0.1): 1
    #   t = 0.1000000015: FP 0 (0.1 < t), lesions 1
    #   then (0, 0). FPs [1, 0, 0], sensitivity [0.5, 0.5, 0] -> 0.5 at every rate.
    # (Pure float64 would give [1, 0] / [0.5, 0] and a score of 0.396.)
    labels = np.zeros((4, 4), dtype=np.int64)
    labels[0, 0], labels[3, 3] = 1, 2
    r = evaluate_slide("t", [(0.1, *pt(0, 0)), (0.1, *pt(2, 0))], labels)
    fps, sens, _ = froc_curve([r])
    np.testing.assert_allclose(fps, [1, 0, 0])
    np.testing.assert_allclose(sens, [0.5, 0.5, 0])
    score, _ = froc_score(fps, sens)
    assert score == pytest.approx(0.5)


def test_no_lesions_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="no lesion"):
        froc_curve([evaluate_slide("n", [(0.5, 0, 0)], None)])


# --- the CLI on a small directory -------------------------------------------------------------
TUMOUR_1 = np.zeros((100, 100), dtype=np.uint8)
TUMOUR_1[10:50, 10:50] = 255  # lesion A (label 1): 40 x 40
TUMOUR_1[60:80, 55:95] = 255  # lesion B (label 2): 20 rows x 40 cols
TUMOUR_1[90, 20] = 255  # ITC (label 3): one pixel grows to a ~9.6 px disk < 35.37
TUMOUR_2 = np.zeros((100, 100), dtype=np.uint8)
TUMOUR_2[20:60, 50:90] = 1  # lesion C, written as a 0/1 mask

DETECTIONS = {
    "tumour_1": [
        (0.9, *pt(30, 30)),  # A
        (0.6, *pt(52, 30)),  # A, 3 px below it, inside the grown rim: hit, not FP
        (0.5, *pt(62, 90)),  # B (a swapped x/y lands at row 90, col 62: background)
        (0.8, *pt(90, 20)),  # ITC: ignored
        (0.7, *pt(55, 5)),  # background: 7.8 px from A's corner (49, 10)
        (0.3, *pt(95, 95)),  # background
    ],
    "tumour_2": [(0.2, *pt(5, 5))],  # C missed; one FP
    "normal_1": [(0.85, 100, 100), (0.5, 50_000, 50_000)],  # normal: all FP, anywhere
    "normal_2": [],  # no detections: still a slide
    "normal_3": [],
}
# Hand-worked FROC for this directory (5 slides, lesions A, B, C; the ITC adds a 0):
#   FP probs {0.85, 0.7, 0.5, 0.3, 0.2}; lesion probs A 0.9, B 0.5, ITC 0, C 0.
#   thresholds (distinct probs but the smallest, 0): 0.2 0.3 0.5 0.7 0.85 0.9
#   FP >= t:                                          5   4   3   2   1    0   then 0
#   lesions >= t:                                     2   2   2   1   1    1   then 0
#   FPs/slide = FP / 5: 1.0 0.8 0.6 0.4 0.2 0 0; sensitivity = lesions / 3.
#   reversed: x [0, 0, .2, .4, .6, .8, 1], y [0, 1/3, 1/3, 1/3, 2/3, 2/3, 2/3]
#   at 0.25 -> 1/3; at 0.5 -> halfway between (.4, 1/3) and (.6, 2/3) = 1/2; 1, 2, 4, 8 -> 2/3
#   score = (1/3 + 1/2 + 4 * 2/3) / 6 = 7/12
EXPECTED_SCORE = 7 / 12


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    det_dir, gt_dir = tmp_path / "det", tmp_path / "gt"
    det_dir.mkdir()
    gt_dir.mkdir()
    write_mask(gt_dir / "tumour_1_mask.tif", TUMOUR_1, subifds=True)
    write_mask(gt_dir / "tumour_2_Mask.tif", TUMOUR_2, subifds=False)
    for slide, rows in DETECTIONS.items():
        write_csv(det_dir / f"{slide}.csv", rows)
    return det_dir, gt_dir


def run_cli(*args: str | Path) -> int:
    return main([str(a) for a in args] + ["--quiet"])


def test_cli_hand_worked_directory(
    dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    det_dir, gt_dir = dataset
    out = tmp_path / "out"
    assert run_cli("--detections", det_dir, "--ground-truth", gt_dir, "--out", out) == 0
    assert capsys.readouterr().out.startswith("FROC 0.5833 (camelyon16, level 5) over 5 slides")
    report = json.loads((out / "froc.json").read_text())
    assert report["froc"] == pytest.approx(EXPECTED_SCORE)
    expected_at = {"0.25": 1 / 3, "0.5": 0.5, "1": 2 / 3, "2": 2 / 3, "4": 2 / 3, "8": 2 / 3}
    assert report["sensitivity_at_fp"] == pytest.approx(expected_at)
    assert (report["lesions"], report["itc"], report["fp"]) == (3, 1, 5)
    t1 = next(s for s in report["per_slide"] if s["slide"] == "tumour_1")
    assert (t1["tp_detections"], t1["fp"], t1["itc_detections_ignored"]) == (3, 2, 1)
    assert (t1["lesions"], t1["lesions_hit"], t1["itc"]) == (2, 2, 1)
    assert report["settings"]["level"] == 5
    assert report["settings"]["protocol"] == "camelyon16"
    curve = (out / "froc_curve.csv").read_text().splitlines()
    assert curve[0] == "threshold,fps_per_slide,sensitivity" and len(curve) == 1 + 7
    assert (out / "froc_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_swapped_xy_scores_differently(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    det_dir, gt_dir = dataset
    for csv in det_dir.glob("tumour_*.csv"):
        rows = [line.split(",") for line in csv.read_text().splitlines()]
        csv.write_text("".join(f"{p},{y},{x}\n" for p, x, y in rows))
    out = tmp_path / "out"
    assert run_cli("--detections", det_dir, "--ground-truth", gt_dir, "--out", out) == 0
    report = json.loads((out / "froc.json").read_text())
    t1 = next(s for s in report["per_slide"] if s["slide"] == "tumour_1")
    assert t1["lesions_hit"] == 1  # B's and the ITC's detections became false positives
    assert report["froc"] != pytest.approx(EXPECTED_SCORE)


def test_cli_mpp_changes_the_grown_lesion(tmp_path: Path) -> None:
    # One tumour pixel at (10, 10) (grows to an ITC) and a 2 x 45 line at rows 25-26 (a
    # lesion: grown it is ~55 px long). Detection 0.9 five cells right of the pixel, 0.8 on
    # the line.
    # 0.243 um/px: threshold 4.82 px, distance 5 is outside the ITC -> a plain FP.
    # --mpp 0.2: threshold 75 / (0.2 * 64) = 5.86 px -> the detection lands on the ITC and
    # is ignored; the ITC limit 275 / 6.4 = 43 px still keeps the line a lesion.
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[10, 10] = 255
    mask[25:27, 5:50] = 255
    det, gt = tmp_path / "d", tmp_path / "g"
    det.mkdir()
    gt.mkdir()
    write_mask(gt / "s_mask.tif", mask)
    write_csv(det / "s.csv", [(0.9, *pt(10, 15)), (0.8, *pt(25, 30))])
    assert run_cli("--detections", det, "--ground-truth", gt, "--out", tmp_path / "a") == 0
    a = json.loads((tmp_path / "a" / "froc.json").read_text())
    assert (a["itc"], a["lesions"], a["lesions_hit"], a["fp"]) == (1, 1, 1, 1)
    assert a["per_slide"][0]["itc_detections_ignored"] == 0
    assert a["per_slide"][0]["mpp"] == 0.243 and a["per_slide"][0]["mpp_source"] == "default"
    assert (
        run_cli("--detections", det, "--ground-truth", gt, "--out", tmp_path / "b", "--mpp", "0.2")
        == 0
    )
    b = json.loads((tmp_path / "b" / "froc.json").read_text())
    assert (b["itc"], b["lesions"], b["lesions_hit"], b["fp"]) == (1, 1, 1, 0)
    assert b["per_slide"][0]["itc_detections_ignored"] == 1
    assert b["settings"]["mpp"] == 0.2 and b["per_slide"][0]["mpp_source"] == "override"


def test_cli_protocols_on_probability_maps(tmp_path: Path) -> None:
    # Maps at level 5 (so both protocols use the level-5 mask). tumour_1 map: 0.9 in A at
    # (30, 45), 0.8 in background at (30, 65) (20 cells right), 0.55 in B at (70, 70).
    # NCRF radius 12 keeps (30, 65); MONAI box 48 covers cols [21, 69) and removes it.
    # normal_1: 0.6 at (10, 10). normal_2: nothing. 3 slides, lesions A, B.
    # camelyon16: FP {0.8, 0.6}; lesions A 0.9, B 0.55, ITC 0
    #   t: 0.55 0.6 0.8 0.9 -> FP 2 2 1 0, TP 2 1 1 1, then (0, 0); FPs/3, sens/2
    #   reversed x [0, 0, 1/3, 2/3, 2/3], y [0, .5, .5, .5, 1]: 0.25, 0.5 -> .5; 1..8 -> 1
    #   score (0.5 + 0.5 + 4) / 6 = 5/6
    # monai: FP {0.6}: t 0.55 0.6 0.9 -> FP 1 1 0, TP 2 1 1, then (0, 0)
    #   reversed x [0, 0, 1/3, 1/3], y [0, .5, .5, 1]: 0.25 -> .5; 0.5..8 -> 1; score 11/12
    det, gt = tmp_path / "d", tmp_path / "g"
    det.mkdir()
    gt.mkdir()
    write_mask(gt / "tumour_1_mask.tif", TUMOUR_1)
    m = np.zeros((100, 100), dtype=np.float32)
    m[30, 45], m[30, 65], m[70, 70] = 0.9, 0.8, 0.55
    np.save(det / "tumour_1.npy", m)
    n = np.zeros((100, 100), dtype=np.float32)
    n[10, 10] = 0.6
    np.save(det / "normal_1.npy", n)
    np.save(det / "normal_2.npy", np.zeros((100, 100), dtype=np.float32))
    base: list[str | Path] = ["--detections", det, "--ground-truth", gt, "--map-level", "5"]
    assert run_cli(*base, "--out", tmp_path / "c") == 0
    assert run_cli(*base, "--out", tmp_path / "m", "--protocol", "monai") == 0
    c = json.loads((tmp_path / "c" / "froc.json").read_text())
    mo = json.loads((tmp_path / "m" / "froc.json").read_text())
    assert c["froc"] == pytest.approx(5 / 6)
    assert mo["froc"] == pytest.approx(11 / 12)
    assert (c["fp"], mo["fp"]) == (2, 1)
    assert mo["settings"]["level"] == 5 and mo["settings"]["nms_box"] == 48
    nms_csv = (tmp_path / "c" / "detections" / "tumour_1.csv").read_text().splitlines()
    # (row 30, col 45) at level 5 -> x = 45.5 * 32 = 1456, y = 30.5 * 32 = 976
    assert nms_csv[0].split(",")[1:] == ["1456", "976"]


def test_cli_slide_level_auc_from_maps(tmp_path: Path) -> None:
    # Map maxima: tumour_1 0.9, normal_1 0.6, normal_2 0.95 -> the tumour slide beats one of
    # the two normal slides: AUC 1/2. With detection-max on the NMS candidates the same.
    det, gt = tmp_path / "d", tmp_path / "g"
    det.mkdir()
    gt.mkdir()
    write_mask(gt / "tumour_1_mask.tif", TUMOUR_1)
    for name, (row, col, peak) in {
        "tumour_1": (30, 45, 0.9), "normal_1": (10, 10, 0.6), "normal_2": (50, 50, 0.95)
    }.items():  # fmt: skip
        m = np.zeros((100, 100), dtype=np.float32)
        m[row, col] = peak
        np.save(det / f"{name}.npy", m)
    reference = tmp_path / "testing.csv"
    reference.write_text("slide,label\ntumour_1,tumor\nnormal_1,normal\nnormal_2,normal\n")
    base: list[str | Path] = ["--detections", det, "--ground-truth", gt, "--map-level", "5"]
    assert run_cli(*base, "--out", tmp_path / "o", "--reference", reference) == 0
    report = json.loads((tmp_path / "o" / "froc.json").read_text())
    assert report["slide_level"]["auc"] == pytest.approx(0.5)
    assert {s["slide"]: s["score"] for s in report["slide_level"]["per_slide"]} == {
        "normal_1": pytest.approx(0.6), "normal_2": pytest.approx(0.95),
        "tumour_1": pytest.approx(0.9),
    }  # fmt: skip
    assert (tmp_path / "o" / "roc_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "o" / "roc_curve.csv").read_text().splitlines()[0] == "fpr,tpr"
    reference.write_text("slide,label\ntumour_1,tumor\nnormal_3,normal\n")
    assert run_cli(*base, "--out", tmp_path / "o", "--reference", reference) == 1


def test_transposed_probability_map_scores_differently(tmp_path: Path) -> None:
    # One tumour slide (TUMOUR_1: A rows 10-50 x cols 10-50, B rows 60-80 x cols 55-95, ITC).
    # Map at level 5 with 0.9 at (row 65, col 90): inside B. Lesion probs A 0, B 0.9, ITC 0,
    # no FP: t = 0.9 -> FP 0, TP 1 of 2; then (0, 0): sensitivity 0.5 at every rate, score 0.5.
    # The transposed map puts 0.9 at (row 90, col 65): background, 45 cells from the ITC.
    # FP {0.9}, lesions 0, 0: t = 0.9 -> 1 FP/slide, sensitivity 0; score 0.
    gt = tmp_path / "g"
    gt.mkdir()
    write_mask(gt / "tumour_1_mask.tif", TUMOUR_1)
    m = np.zeros((100, 100), dtype=np.float32)
    m[65, 90] = 0.9
    scores = []
    for name, prob_map in (("rows_are_y", m), ("transposed", m.T)):
        det = tmp_path / name
        det.mkdir()
        np.save(det / "tumour_1.npy", np.ascontiguousarray(prob_map))
        out = tmp_path / f"out_{name}"
        assert run_cli("--detections", det, "--ground-truth", gt, "--map-level", "5",
                       "--out", out) == 0  # fmt: skip
        scores.append(json.loads((out / "froc.json").read_text())["froc"])
    assert scores == [pytest.approx(0.5), pytest.approx(0.0)]


def test_cli_errors(
    dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    det_dir, gt_dir = dataset
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("--detections", empty, "--ground-truth", gt_dir, "--out", out) == 1
    err = capsys.readouterr().err
    assert "no detections to evaluate" in err and err.count("\n") == 1

    (det_dir / "tumour_1.csv").write_text("0.9,976,976\n0.5;10;10\n")
    assert run_cli("--detections", det_dir, "--ground-truth", gt_dir, "--out", out) == 1
    assert "tumour_1.csv:2: expected 3 fields" in capsys.readouterr().err

    write_csv(det_dir / "tumour_1.csv", [(0.9, 101 * CELL, 16)])  # col 101 of a 100-col mask
    assert run_cli("--detections", det_dir, "--ground-truth", gt_dir, "--out", out) == 1
    assert "tumour_1: detection 1 at x=3232, y=16" in capsys.readouterr().err

    write_csv(det_dir / "tumour_1.csv", [])
    write_mask(gt_dir / "tumour_1_mask.tif", TUMOUR_1, levels=5)
    assert run_cli("--detections", det_dir, "--ground-truth", gt_dir, "--out", out) == 1
    assert "has 5 level(s) with downsamples [1.0, 2.0, 4.0, 8.0, 16.0]" in capsys.readouterr().err

    assert run_cli("--detections", det_dir, "--ground-truth", gt_dir, "--out", out,
                   "--protocol", "monai") == 2  # fmt: skip
    assert "--map-level" in capsys.readouterr().err


def test_client_script_runs_cli(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    import runpy
    import sys

    det_dir, gt_dir = dataset
    script = Path(__file__).resolve().parents[1] / "client" / "evaluate_froc.py"
    argv = [str(script), "--detections", str(det_dir), "--ground-truth", str(gt_dir),
            "--out", str(tmp_path / "o"), "--quiet"]  # fmt: skip
    old = sys.argv
    sys.argv = argv
    try:
        with pytest.raises(SystemExit) as exc:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = old
    assert exc.value.code == 0
    assert json.loads((tmp_path / "o" / "froc.json").read_text())["froc"] == pytest.approx(7 / 12)


ASAP_XML = """<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="_0" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="0" X="320" Y="320" />
        <Coordinate Order="1" X="1600" Y="320" />
        <Coordinate Order="2" X="1600" Y="1600" />
        <Coordinate Order="3" X="320" Y="1600" />
      </Coordinates>
    </Annotation>
  </Annotations>
  <AnnotationGroups>
    <Group Name="Tumor" PartOfGroup="None" Color="#00ff00"><Attributes /></Group>
  </AnnotationGroups>
</ASAP_Annotations>
"""


def test_cli_xml_ground_truth_with_images(tmp_path: Path) -> None:
    # A 2048 x 2048 slide at 0.25 um/px; the XML square covers level-0 320..1600, i.e.
    # level-5 cells 10..50. Detections: 0.9 inside (hit), 0.5 at cell (60, 60) (FP).
    # thresholds 0.5, 0.9 -> FP 1, 0; TP 1, 1; then (0, 0): reversed x [0, 0, 1],
    # y [0, 1, 1] -> sensitivity 1 at every rate, score 1.
    det, gt, images = tmp_path / "d", tmp_path / "g", tmp_path / "i"
    for d in (det, gt, images):
        d.mkdir()
    (gt / "s.xml").write_text(ASAP_XML)
    rgb = np.full((2048, 2048, 3), 230, dtype=np.uint8)
    with tifffile.TiffWriter(images / "s.tif") as tw:
        res = (1e4 / 0.25, 1e4 / 0.25)
        tw.write(rgb, tile=(256, 256), subifds=2, resolution=res, resolutionunit="CENTIMETER",
                 photometric="rgb")  # fmt: skip
        for k in (1, 2):
            tw.write(rgb[:: 2**k, :: 2**k], tile=(256, 256), subfiletype=1, photometric="rgb")
    write_csv(det / "s.csv", [(0.9, *pt(30, 30)), (0.5, *pt(60, 60))])
    args: list[str | Path] = ["--detections", det, "--ground-truth", gt]
    with pytest.raises(EvaluationError, match=r"s\.xml: XML ground truth needs .* --images"):
        evaluate_directory(det, gt, FrocConfig.build())  # no --images: size unknown
    assert run_cli(*args, "--out", tmp_path / "o", "--images", images) == 0
    report = json.loads((tmp_path / "o" / "froc.json").read_text())
    assert report["froc"] == pytest.approx(1.0)
    assert (report["lesions"], report["lesions_hit"], report["fp"]) == (1, 1, 1)
    assert report["per_slide"][0]["ground_truth"] == "xml"
    assert report["per_slide"][0]["mpp"] == pytest.approx(0.25)


def test_xml_ground_truth_with_known_geometry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same square and detections as above, with the slide geometry given directly
    # (2048 x 2048 at 0.243 um/px) instead of read from an image: score 1 (see above).
    from wsi_tumor.evaluation import evaluate
    from wsi_tumor.evaluation.groundtruth import SlideGeometry

    monkeypatch.setattr(
        evaluate, "slide_geometry", lambda *a, **k: SlideGeometry((2048, 2048), 0.243, "test")
    )
    det, gt = tmp_path / "d", tmp_path / "g"
    det.mkdir()
    gt.mkdir()
    (gt / "s.xml").write_text(ASAP_XML)
    write_csv(det / "s.csv", [(0.9, *pt(30, 30)), (0.5, *pt(60, 60)), (0.4, *pt(8, 30))])
    # (8, 30) is 2 cells above the square's edge row 10: inside the grown lesion
    report = evaluate.evaluate_directory(det, gt, FrocConfig.build())
    r = report.slides[0].result
    assert (r.num_lesions, r.num_tp_detections, r.num_fp) == (1, 2, 1)
    assert report.score == pytest.approx(1.0)


# --- bootstrap interval of a paired difference (the accuracy report's uncertainty) ---


def test_bootstrap_interval_matches_scipys_percentile_interval_of_a_mean() -> None:
    from scipy.stats import bootstrap

    from wsi_tumor.evaluation.agreement import bootstrap_interval

    values = np.random.default_rng(3).normal(size=400)
    ours = bootstrap_interval(lambda drawn: float(values[drawn].mean()), [range(400)])
    theirs = bootstrap(
        (values,), np.mean, method="percentile", n_resamples=2000, rng=np.random.default_rng(1)
    ).confidence_interval
    assert ours[0] < values.mean() < ours[1]
    assert ours == pytest.approx((theirs.low, theirs.high), abs=0.015)
    assert ours == bootstrap_interval(lambda drawn: float(values[drawn].mean()), [range(400)])


def test_bootstrap_interval_keeps_strata_and_drops_undefined_resamples() -> None:
    from wsi_tumor.evaluation.agreement import bootstrap_interval

    tumour, normal = [0, 1, 2], [3, 4, 5, 6]
    seen = []

    def tumour_share(drawn: np.ndarray) -> float:
        seen.append(len(drawn))
        if (drawn == 0).sum() > 1:  # undefined on some resamples: they are left out
            raise EvaluationError("slide 0 drawn twice")
        return float(np.isin(drawn, tumour).mean())

    assert bootstrap_interval(tumour_share, [tumour, [], normal]) == (3 / 7, 3 / 7)
    assert len(seen) == 2000 and set(seen) == {7}

    def undefined(drawn: np.ndarray) -> float:
        raise EvaluationError("no lesion drawn")

    with pytest.raises(EvaluationError, match="every bootstrap resample"):
        bootstrap_interval(undefined, [tumour])
    with pytest.raises(EvaluationError, match="no items"):
        bootstrap_interval(tumour_share, [[], []])
