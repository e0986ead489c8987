"""Label CSVs: grid geometry, bundle column order, polygons, and every input error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsi_tumor.errors import LabelError
from wsi_tumor.training import labels_cli
from wsi_tumor.training.grid import cell_centres_csv_order, csv_to_grid
from wsi_tumor.training.labels import (
    LabelRow,
    make_labels,
    read_coords,
    read_label_csv,
    write_label_csv,
)

SLIDE_SIZE = (4000, 5000)  # (w, h) of every fake slide
# tumour rectangle x in [1100, 1500], y in [2100, 2500]; exclusion around (1128, 2384)
TUMOUR = [[1100, 2100], [1500, 2100], [1500, 2500], [1100, 2500]]
EXCLUSION = [[1110, 2370], [1150, 2370], [1150, 2400], [1110, 2400]]
# centre (1384, 2384): region origin (1000, 2000); cell centres x 1128/1384/1640, y 2128/2384/2640
# inside: (col 0,row 0) (col 1,row 0) (col 1,row 1); (col 0,row 1) is excluded.
# CSV order k = 3 * col + row  ->  l0=1 l1=0 l2=0 l3=1 l4=1 l5=0 l6=0 l7=0 l8=0
EXPECTED = (1, 0, 0, 1, 1, 0, 0, 0, 0)


def test_cell_centres_csv_order_is_x_outer_y_inner() -> None:
    centres = cell_centres_csv_order(1384, 2384)
    assert centres.tolist() == [
        [1128, 2128],
        [1128, 2384],
        [1128, 2640],
        [1384, 2128],
        [1384, 2384],
        [1384, 2640],
        [1640, 2128],
        [1640, 2384],
        [1640, 2640],
    ]


def test_csv_to_grid_matches_bundle_col_groups() -> None:
    # the bundle: label = row[[3, 6, 9, 4, 7, 10, 5, 8, 11]].reshape(3, 3), indexed [row, col]
    csv_row = np.arange(12)
    bundle = csv_row[[3, 6, 9, 4, 7, 10, 5, 8, 11]].reshape(3, 3) - 3
    np.testing.assert_array_equal(csv_to_grid(np.arange(9)), bundle)
    np.testing.assert_array_equal(csv_to_grid(EXPECTED), [[1, 1, 0], [0, 1, 0], [0, 0, 0]])


def _dataset(tmp_path: Path, fmt: str) -> Path:
    (tmp_path / "images").mkdir()
    for name in ("tumor_001", "normal_001"):
        (tmp_path / "images" / f"{name}.tif").write_bytes(b"")
    ann = tmp_path / "ann"
    ann.mkdir()
    if fmt == "json":
        doc = {
            "positive": [{"name": "Annotation 0", "vertices": TUMOUR}],
            "negative": [{"name": "Annotation 1", "vertices": EXCLUSION}],
        }
        (ann / "tumor_001.json").write_text(json.dumps(doc))
    else:

        def poly(name: str, group: str, pts: list[list[int]]) -> str:
            coords = "".join(
                f'<Coordinate Order="{i}" X="{x}" Y="{y}" />' for i, (x, y) in enumerate(pts)
            )
            return (
                f'<Annotation Name="{name}" Type="Polygon" PartOfGroup="{group}" '
                f'Color="#F4FA58"><Coordinates>{coords}</Coordinates></Annotation>'
            )

        (ann / "tumor_001.xml").write_text(
            '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
            + poly("Annotation 0", "Tumor", TUMOUR)
            + poly("Annotation 1", "Exclusion", EXCLUSION)
            + '</Annotations><AnnotationGroups><Group Name="Tumor" PartOfGroup="None" '
            'Color="#ff0000"><Attributes /></Group><Group Name="Exclusion" PartOfGroup="None" '
            'Color="#00ff00"><Attributes /></Group></AnnotationGroups></ASAP_Annotations>'
        )
    (tmp_path / "coords.txt").write_text(
        "tumor_001,1384,2384\ntumor_001,3000,4000\n\nnormal_001,1384,2384\n"
    )
    return tmp_path


def _size(_: Path) -> tuple[int, int]:
    return SLIDE_SIZE


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_labels_agree_with_hand_checked_polygon(tmp_path: Path, fmt: str) -> None:
    root = _dataset(tmp_path, fmt)
    rows = make_labels([root / "coords.txt"], root / "images", root / "ann", _size)
    assert [(r.slide, r.x, r.y, r.labels) for r in rows] == [
        ("tumor_001", 1384, 2384, EXPECTED),
        ("tumor_001", 3000, 4000, (0,) * 9),
        ("normal_001", 1384, 2384, (0,) * 9),  # no annotation file: a normal slide
    ]
    out = write_label_csv(rows, tmp_path / "training.csv")
    assert out.read_text().splitlines()[0] == "tumor_001,1384,2384,1,0,0,1,1,0,0,0,0"
    back = read_label_csv(out)
    assert [(r.slide, r.x, r.y, r.labels) for r in back] == [
        (r.slide, r.x, r.y, r.labels) for r in rows
    ]


def test_coords_parse_and_skip_blank_lines(tmp_path: Path) -> None:
    root = _dataset(tmp_path, "json")
    centres = read_coords(root / "coords.txt")
    assert [(c.slide, c.x, c.y, c.line) for c in centres] == [
        ("tumor_001", 1384, 2384, 1),
        ("tumor_001", 3000, 4000, 2),
        ("normal_001", 1384, 2384, 4),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("tumor_001,12,abc", r"coords\.txt:2: y 'abc' is not a number"),
        ("tumor_001,12", r"coords\.txt:2: expected 'slide_name,x,y'"),
        ("tumor_001,12.5,30", r"coords\.txt:2: x '12.5' is not a whole pixel"),
        ("tumor_009,100,100", r"coords\.txt:2: slide 'tumor_009' not found in .*images"),
        (
            "tumor_001,4000,100",
            r"coords\.txt:2: centre \(4000, 100\) is outside slide "
            r"'tumor_001' of size 4000 x 5000",
        ),
        ("tumor_001,-1,100", r"coords\.txt:2: centre \(-1, 100\) is outside"),
    ],
)
def test_coords_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    root = _dataset(tmp_path, "json")
    (root / "coords.txt").write_text(f"tumor_001,1384,2384\n{line}\n")
    with pytest.raises(LabelError, match=message):
        make_labels([root / "coords.txt"], root / "images", root / "ann", _size)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("s,1,2,0,0,0,0,0,0,0,0", r"bad\.csv:1: expected 12 fields"),
        ("s,1,2,0,0,0,0,0,0,0,0,2", r"bad\.csv:1: labels must be 0 or 1"),
        ("s,x,2,0,0,0,0,0,0,0,0,0", r"bad\.csv:1: x 'x' is not a number"),
    ],
)
def test_label_csv_errors(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text(line + "\n")
    with pytest.raises(LabelError, match=message):
        read_label_csv(tmp_path / "bad.csv")


def test_missing_label_csv(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match=r"nope\.csv: file does not exist"):
        read_label_csv(tmp_path / "nope.csv")


def test_label_row_csv_fields() -> None:
    row = LabelRow("a", 1, 2, (0, 1, 0, 0, 0, 0, 0, 0, 1))
    assert row.as_csv() == ["a", "1", "2", "0", "1", "0", "0", "0", "0", "0", "0", "1"]


def test_cli_reports_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _dataset(tmp_path, "json")
    (root / "coords.txt").write_text("tumor_404,10,10\n")
    code = labels_cli.main(
        [
            "--images",
            str(root / "images"),
            "--annotations",
            str(root / "ann"),
            "--train-coords",
            str(root / "coords.txt"),
            "--out-dir",
            str(root),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1  # EXIT_FAILURE: bad input (bad flags would be 2)
    assert len(err) == 1
    assert "coords.txt:1: slide 'tumor_404' not found" in err[0]
