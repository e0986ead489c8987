"""Hard-negative mining: where centres are taken, the cap, the output's formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsi_tumor import contract, mine
from wsi_tumor.client.outputs import SlideOutputs, write_npy
from wsi_tumor.fileio import write_json
from wsi_tumor.training.labels import make_labels, read_coords
from wsi_tumor.training.mining import MiningConfig, mine_slide

CELL = contract.PATCH_STRIDE  # 64 level-0 px per map cell at 0.243 um/px
SHAPE = (60, 80)  # map rows, cols: a 5120 x 3840 px slide


def _outputs(maps: Path, slide: str, prob_map: np.ndarray) -> None:
    """A complete wsi-infer output set for ``prob_map`` (the product's own writers)."""
    outputs = SlideOutputs(maps, slide)
    maps.mkdir(parents=True, exist_ok=True)
    write_npy(outputs.prob_map, prob_map.astype(np.float32))
    for path in outputs.all_paths()[1:-1]:
        path.write_bytes(b"")
    write_json(
        outputs.report,
        {
            "level0_size": [SHAPE[1] * CELL, SHAPE[0] * CELL],
            "resolution": {"slide_px_per_view_px": 1.0},
            "map_cell_um": CELL * contract.MODEL_MPP,
            "checksums": outputs.checksums(),
        },
    )


def _dataset(root: Path) -> None:
    """Two training slides: a tumour slide with one square lesion, a normal slide."""
    (root / "coords").mkdir(parents=True)
    (root / "jsons").mkdir()
    (root / "images").mkdir()
    for name in ("tumor_001", "normal_001"):
        (root / "images" / f"{name}.tif").write_bytes(b"")
    # tumour: cells rows 10-19, cols 10-19 (level-0 640..1280)
    square = [[640, 640], [1280, 640], [1280, 1280], [640, 1280]]
    (root / "jsons" / "tumor_001.json").write_text(
        json.dumps({"positive": [{"name": "A", "vertices": square}], "negative": []})
    )
    (root / "coords" / "tumor_train.txt").write_text("tumor_001,960,960\n")
    (root / "coords" / "normal_train.txt").write_text(
        "".join(f"normal_001,{x},2000\n" for x in range(500, 4500, 500))  # 8 centres
    )
    write_json(
        root / "dataset.json",
        {"slides": [{"name": "normal_001", "confounders": [
            {"kind": "germinal", "box": [2500, 2500, 3300, 3300]}
        ]}]},
    )  # fmt: skip


def test_mine_slide_keeps_peaks_outside_the_grown_tumour() -> None:
    prob = np.zeros(SHAPE, np.float32)
    tumour = np.zeros(SHAPE, bool)
    tumour[10:20, 10:20] = True
    prob[15, 15] = 0.99  # inside the tumour: never mined
    prob[40, 40] = 0.9
    prob[40, 42] = 0.8  # 2 cells from a higher peak: suppressed (min distance 6)
    prob[40, 60] = 0.7
    prob[50, 5] = 0.4  # below the threshold
    found = mine_slide(prob, tumour, MiningConfig())
    assert found == [(40, 40, pytest.approx(0.9)), (40, 60, pytest.approx(0.7))]


def test_wsi_mine_writes_ncrf_centres_labels_and_attribution(tmp_path: Path) -> None:
    data, maps = tmp_path / "data", tmp_path / "maps"
    _dataset(data)
    tumour_map = np.zeros(SHAPE, np.float32)
    tumour_map[12, 12] = 0.99  # inside the lesion
    tumour_map[22, 12] = 0.95  # 3 cells below it: inside the 75 um (5 cell) margin
    tumour_map[40, 50] = 0.8  # far from it: mined
    normal_map = np.zeros(SHAPE, np.float32)
    normal_map[45, 45] = 0.97  # level-0 (2912, 2912): inside the germinal centre's box
    normal_map[5, 70] = 0.6
    normal_map[30, 30] = 0.55
    _outputs(maps, "tumor_001", tumour_map)
    _outputs(maps, "normal_001", normal_map)
    # cap: 0.25 of the 8 normal centres = 2 (the two highest)
    assert mine.main([str(data), "--maps", str(maps), "--max-share", "0.25", "--quiet"]) == 0
    listed = data / "coords" / "hard_negative_train.txt"
    assert listed.read_text().splitlines() == ["normal_001,2912,2912", "tumor_001,3232,2592"]
    report = json.loads(listed.with_suffix(".json").read_text())
    assert report["cap"] == 2 and report["candidates"] == 4 and report["mined"] == 2
    assert report["by_confounder"] == {"germinal": 1, "none": 1}
    assert report["per_slide"]["tumor_001"]["candidates"] == 1
    # wsi-labels reads the list unchanged: every mined cell outside the lesion is label 0
    rows = make_labels([listed], data / "images", data / "jsons", lambda _: (5120, 3840))
    assert [(r.slide, r.x, r.y) for r in rows] == [(c.slide, c.x, c.y) for c in read_coords(listed)]
    assert all(r.labels == (0,) * 9 for r in rows)


def test_mined_rows_load_in_monais_training_dataset(tmp_path: Path) -> None:
    from monai.data import CSVDataset

    from wsi_tumor.training.labels import write_label_csv

    data, maps = tmp_path / "data", tmp_path / "maps"
    _dataset(data)
    prob = np.zeros(SHAPE, np.float32)
    prob[45, 45] = 0.97
    _outputs(maps, "tumor_001", np.zeros(SHAPE, np.float32))
    _outputs(maps, "normal_001", prob)
    assert mine.main([str(data), "--maps", str(maps), "--quiet"]) == 0
    listed = data / "coords" / "hard_negative_train.txt"
    rows = make_labels([listed], data / "images", data / "jsons", lambda _: (5120, 3840))
    csv_path = write_label_csv(rows, tmp_path / "training.csv")
    # the MONAI bundle's train.json reads its training CSV exactly so
    dataset = CSVDataset(
        src=str(csv_path),
        col_groups={"image": 0, "location": [2, 1], "label": [3, 6, 9, 4, 7, 10, 5, 8, 11]},
        kwargs_read_csv={"header": None},
    )
    assert len(dataset) == 1
    item = dataset[0]
    assert item["image"] == "normal_001"
    np.testing.assert_array_equal(np.asarray(item["location"]), [2912, 2912])  # (y, x)
    np.testing.assert_array_equal(np.asarray(item["label"]), np.zeros(9))


def test_missing_map_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    _dataset(data)
    assert mine.main([str(data), "--maps", str(tmp_path / "none"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tumor_001" in err[0] and "no complete wsi-infer outputs" in err[0]


@pytest.mark.parametrize(
    ("flag", "value"), [("--threshold", "1.5"), ("--max-share", "0"), ("--min-distance", "0")]
)
def test_bad_settings_are_usage_errors(tmp_path: Path, flag: str, value: str) -> None:
    data = tmp_path / "data"
    _dataset(data)
    assert mine.main([str(data), "--maps", str(tmp_path), flag, value, "--quiet"]) == 2
