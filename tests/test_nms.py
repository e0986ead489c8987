"""NMS (NCRF and MONAI variants) and the ``prob,x,y`` CSV helpers, with hand-worked answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_tumor.errors import EvaluationError
from wsi_tumor.evaluation.nms import nms, nms_monai, read_detections, write_detections


def ncrf_reference(probs_map_xy: np.ndarray, level: int, radius: int, thr: float) -> np.ndarray:
    """NCRF's nms.py loop, re-stated: its map is indexed [x, y]."""
    m = probs_map_xy.astype(np.float64).copy()
    size_x, size_y = m.shape
    out = []
    while np.max(m) > thr:
        p = m.max()
        xs, ys = np.where(m == p)
        x, y = xs[0], ys[0]
        out.append((p, int((x + 0.5) * 2**level), int((y + 0.5) * 2**level)))
        x0, x1 = max(x - radius, 0), min(x + radius, size_x)
        y0, y1 = max(y - radius, 0), min(y + radius, size_y)
        m[x0:x1, y0:y1] = 0
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)


def test_nms_picks_maxima_and_suppresses_neighbours() -> None:
    m = np.zeros((6, 8))
    m[1, 5] = 0.9  # kept: x = (5 + 0.5) * 8 = 44, y = (1 + 0.5) * 8 = 12
    m[1, 6] = 0.7  # inside the box of (1, 5): rows [0, 3), cols [3, 7) -> suppressed
    m[4, 2] = 0.8  # outside it: x = 2.5 * 8 = 20, y = 4.5 * 8 = 36
    out = nms(m, level=3, radius=2)
    np.testing.assert_allclose(out, [[0.9, 44, 12], [0.8, 20, 36]])


def test_nms_box_is_half_open_like_ncrf() -> None:
    # Peak at (row 5, col 5), radius 2: NCRF zeroes [3, 7) in each axis, so offsets -2 are
    # suppressed and offsets +2 survive.
    m = np.zeros((11, 11))
    m[5, 5] = 0.9
    m[5, 3] = m[3, 5] = 0.8  # offset -2: suppressed
    m[5, 7] = 0.7  # offset +2 in x: survives -> x = 7.5, y = 5.5 at level 0
    m[7, 5] = 0.6  # offset +2 in y: survives -> x = 5.5, y = 7.5
    out = nms(m, level=0, radius=2)
    # level 0: int(7.5) = 7, int(5.5) = 5
    np.testing.assert_allclose(out, [[0.9, 5, 5], [0.7, 7, 5], [0.6, 5, 7]])


def test_nms_threshold_is_strict() -> None:
    m = np.zeros((4, 4))
    m[0, 0] = 0.5  # == threshold: not taken
    m[3, 3] = 0.5000001
    out = nms(m, level=1, radius=1, threshold=0.5)
    np.testing.assert_allclose(out, [[0.5000001, 7, 7]])  # (3 + 0.5) * 2 = 7


def test_nms_orientation_rows_are_y() -> None:
    m = np.zeros((4, 10))  # 4 rows (y), 10 columns (x)
    m[1, 8] = 0.9
    np.testing.assert_allclose(nms(m, level=6), [[0.9, 8.5 * 64, 1.5 * 64]])
    # the transposed map (NCRF's layout) is a different slide: x and y swap
    np.testing.assert_allclose(nms(m.T, level=6), [[0.9, 1.5 * 64, 8.5 * 64]])


def test_nms_clips_partial_last_cell_centres_to_the_slide() -> None:
    m = np.zeros((2, 3))
    m[1, 2] = 0.9  # last cell of a 150 x 100 px slide at level 6: centre (160, 96)
    np.testing.assert_allclose(nms(m, level=6), [[0.9, 160, 96]])
    np.testing.assert_allclose(nms(m, level=6, size=(150, 100)), [[0.9, 149, 96]])
    np.testing.assert_allclose(nms_monai(m, level=6, size=(150, 90)), [[0.9, 149, 89]])


def test_nms_ties_follow_each_reference() -> None:
    m = np.zeros((8, 8))
    m[0, 3] = 1.0  # (x=3, y=0)
    m[2, 1] = 1.0  # (x=1, y=2): NCRF's np.where on its [x, y] map meets x=1 first
    # NCRF radius 5: first (x=1, y=2) -> 1.5*4=6, 2.5*4=10; its box rows [0,7) cols [0,6)
    # covers (0, 3), so one detection.
    np.testing.assert_allclose(nms(m, level=2, radius=5), [[1.0, 6, 10]])
    # MONAI argmax on the (rows, cols) map meets row 0 first: (x=3, y=0) -> 14, 2
    np.testing.assert_allclose(nms_monai(m, level=2, box_size=10), [[1.0, 14, 2]])


def test_nms_matches_ncrf_on_transposed_random_maps() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = np.round(rng.random((37, 53)), 2)  # rounding makes ties common
        expected = ncrf_reference(m.T, level=6, radius=4, thr=0.5)
        np.testing.assert_array_equal(nms(m, level=6, radius=4, threshold=0.5), expected)


def test_nms_monai_box_bounds() -> None:
    # box 5: lower 5 // 2 = 2, upper 3 -> [c-2, c+3), symmetric; box 4: [c-2, c+2)
    m = np.zeros((9, 9))
    m[4, 4] = 0.9
    m[4, 6] = 0.8  # offset +2
    np.testing.assert_allclose(nms_monai(m, 0, box_size=5), [[0.9, 4, 4]])
    np.testing.assert_allclose(nms_monai(m, 0, box_size=4), [[0.9, 4, 4], [0.8, 6, 4]])


def test_nms_empty_and_errors() -> None:
    assert nms(np.zeros((3, 3)), level=6).shape == (0, 3)
    with pytest.raises(EvaluationError, match="radius"):
        nms(np.zeros((3, 3)), level=6, radius=0)
    with pytest.raises(EvaluationError, match="threshold"):
        nms(np.zeros((3, 3)), level=6, threshold=-0.1)
    with pytest.raises(EvaluationError, match="NaN"):
        nms(np.full((3, 3), np.nan), level=6)
    with pytest.raises(EvaluationError, match="2-D"):
        nms(np.zeros((3, 3, 1)), level=6)


def test_csv_roundtrip_without_header(tmp_path: Path) -> None:
    det = np.array([[0.123456789, 1024, 2048], [1.0, 32, 16.5]])
    path = write_detections(tmp_path / "a.csv", det)
    assert path.read_text().splitlines()[0] == "0.123456789,1024,2048"  # no header
    np.testing.assert_array_equal(read_detections(path), det)


def test_csv_reader_accepts_header_blank_lines_and_empty(tmp_path: Path) -> None:
    p = tmp_path / "b.csv"
    p.write_text("prob,x,y\n0.9,10,20\n\n 0.5 , 30 , 40 \n")
    np.testing.assert_allclose(read_detections(p), [[0.9, 10, 20], [0.5, 30, 40]])
    write_detections(p, np.zeros((0, 3)), header=True)
    assert p.read_text() == "prob,x,y\n"
    assert read_detections(p).shape == (0, 3)
    (tmp_path / "c.csv").write_text("")
    assert read_detections(tmp_path / "c.csv").shape == (0, 3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("0.9,10,20\n0.8,10\n", r"c\.csv:2: expected 3 fields"),
        ("0.9,10,20\n\n0.8,ten,20\n", r"c\.csv:3: not numbers"),
        ("1.5,10,20\n", r"c\.csv:1: probability 1.5 is outside"),
        ("0.5,-1,20\n", r"c\.csv:1: coordinates must be finite and >= 0"),
        ("x,y,prob\n", r"c\.csv:1: not numbers"),
    ],
)
def test_csv_reader_errors_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "c.csv"
    p.write_text(content)
    with pytest.raises(EvaluationError, match=message):
        read_detections(p)
