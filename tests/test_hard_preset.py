"""The hard preset: real lesion shapes, the source's mix, confounders, layout, determinism."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from wsi_tumor.annotations.formats import read_asap_xml
from wsi_tumor.data import layout
from wsi_tumor.data.hard import SMALL, HardConfig, generate_hard, write_hard_slide
from wsi_tumor.data.hard.config import TEST_BUDGET, TRAIN_BUDGET
from wsi_tumor.data.hard.confounders import CONFOUNDERS, plan_confounders
from wsi_tumor.data.hard.generate import (
    HardSpec,
    choose_lesions,
    macro_share,
    plan_specs,
    stream,
)
from wsi_tumor.data.hard.plan import plan_tissue
from wsi_tumor.data.hard.shapes import classify, feret_px, load_table
from wsi_tumor.evaluation.masks import evaluation_mask, itc_labels, read_mask_level

SEED = 5
MPP = layout.MPP


def _small_config(out: Path, **changes: Any) -> HardConfig:
    values: dict[str, Any] = {
        "out": out,
        "train": 2,
        "valid": 0,
        "test": 2,
        "seed": SEED,
        "coords": 20,
        "valid_coords": 0,
        "quiet": True,
        **SMALL,
    }
    values.update(changes)
    return HardConfig(**values)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hard")
    generate_hard(_small_config(root))
    return root


def _metadata(root: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((root / layout.METADATA_JSON).read_text())
    return result


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the shape table ------------------------------------------------------------------------
def test_table_is_real_camelyon16_and_small() -> None:
    table = load_table()
    path = Path(__file__).parents[1] / "src/wsi_tumor/data/hard/camelyon16_shapes.json"
    assert path.stat().st_size < 300_000
    assert len(table.profiles) == 110  # NCRF's 100 training + 10 validation tumour slides
    totals = np.array([p[1:] for p in table.profiles]).sum(axis=0)
    np.testing.assert_array_equal(totals, [1460, 603, 99])  # ITC, micro, macro polygons
    assert sum(1 for p in table.profiles if p[3] > 0) == 46
    counts = Counter(s.lesion_class for s in table.shapes)
    assert counts == {"itc": 250, "micro": 250, "macro": 20}
    for shape in table.shapes:
        major = feret_px(shape.vertices) * table.mpp
        assert major == pytest.approx(shape.major_um, abs=0.11)
        assert classify(major) == shape.lesion_class
        assert shape.source.startswith("Tumor_")
    assert min(s.major_um for s in table.of_class("macro")) > 2000
    assert max(s.major_um for s in table.of_class("itc")) < 200


def test_lesion_mix_follows_the_source() -> None:
    table = load_table()
    share = macro_share(table)
    assert share == pytest.approx(46 / 110)
    specs = plan_specs(HardConfig(out=Path("unused"), train=40, valid=0, test=40), table)
    for split in ("train", "test"):
        tumours = [s for s in specs if s.split == split and s.label == "tumor"]
        macros = sum(1 for s in tumours if s.lesion_kind == "macro")
        assert abs(macros - share * len(tumours)) <= 1
    tests = [s for s in specs if s.split == "test"]
    assert sum(1 for s in tests if s.label == "normal") == len(tests) // 2
    assert Counter(s.centre for s in tests) == {"train": 20, "test": 20}
    assert {s.centre for s in specs if s.split != "test"} == {"train"}
    # per-slide counts are a source slide's, capped by the budget
    for number in range(12):
        spec = HardSpec(f"tumor_{number:03d}", "tumor", "train", "train", "micro")
        shapes, source = choose_lesions(stream(1, spec.name, 0), spec, table, TRAIN_BUDGET, 1)
        profile = next(p for p in table.profiles if p[0] == source)
        classes = Counter(s.lesion_class for s in shapes)
        assert classes["macro"] == 0 and profile[3] == 0
        assert classes["micro"] == max(1, min(profile[2], TRAIN_BUDGET.max_micro))
        assert classes["itc"] == min(profile[1], TRAIN_BUDGET.max_itc)


def test_placement_keeps_real_sizes_and_stays_inside() -> None:
    table = load_table()
    by_key = {s.key: s for s in table.shapes}
    for number, kind in enumerate(("macro", "micro", "micro", "none")):
        spec = HardSpec(f"test_{number:03d}", "tumor", "test", "test", kind, number)
        rng = stream(SEED, spec.name, 0)
        shapes, _ = choose_lesions(rng, spec, table, TEST_BUDGET, SEED)
        plan = plan_tissue(rng, shapes, TEST_BUDGET, MPP)
        assert plan.width % 64 == 0 and plan.height % 64 == 0
        placed = [p for p in plan.annotations if p.is_tumor]
        assert len(placed) == len(plan.lesions) >= (1 if shapes else 0)
        if kind == "macro":
            assert plan.lesions[0].lesion_class == "macro"
        tissue = plan.tissue_raster()
        for polygon, info in zip(placed, plan.lesions, strict=True):
            source = by_key[info.shape]
            assert info.major_um == pytest.approx(source.major_um, abs=0.15)  # rigid
            assert info.lesion_class == source.lesion_class
            area = 0.5 * abs(
                np.dot(polygon.vertices[:, 0], np.roll(polygon.vertices[:, 1], -1))
                - np.dot(polygon.vertices[:, 1], np.roll(polygon.vertices[:, 0], -1))
            )
            assert area * MPP**2 == pytest.approx(source.area_um2, rel=1e-3, abs=2)
            cols = (polygon.vertices[:, 0] // 16).astype(int)
            rows = (polygon.vertices[:, 1] // 16).astype(int)
            assert tissue[rows, cols].all()
        for item in plan_confounders(stream(SEED, spec.name, 1), plan, MPP):
            x0, y0, x1, y1 = item.box
            assert 0 <= x0 < x1 <= plan.width and 0 <= y0 < y1 <= plan.height


# --- a generated dataset --------------------------------------------------------------------
def test_layout_lists_and_metadata(small: Path) -> None:
    images = sorted(p.name for p in (small / layout.IMAGES_DIR).iterdir())
    assert images == ["normal_001.tif", "test_001.tif", "test_002.tif", "tumor_001.tif"]
    testing = layout.coords_path(small, layout.TESTING_CSV).read_text().splitlines()
    assert testing == ["slide,label", "test_001,tumor", "test_002,normal"]
    for name in (layout.TUMOR_TRAIN, layout.NORMAL_TRAIN, layout.TUMOR_VALID, layout.NORMAL_VALID):
        assert layout.coords_path(small, name).is_file()
    assert len(layout.coords_path(small, layout.TUMOR_TRAIN).read_text().splitlines()) == 20
    meta = _metadata(small)
    assert meta["config"]["preset"] == "hard"
    seen: set[str] = set()
    for slide in meta["slides"]:
        tumour = slide["label"] == "tumor"
        assert layout.mask_path(small, slide["name"]).exists() == tumour
        assert layout.xml_path(small, slide["name"]).exists() == tumour
        assert slide["centre"] in ("train", "test")
        with tifffile.TiffFile(layout.image_path(small, slide["name"])) as tif:
            assert len(tif.pages) >= 7
            assert tif.pages[0].shape == (slide["height"], slide["width"], 3)
        assert len(slide["lesions"]) <= sum(slide["lesions_requested"].values())
        assert (len(slide["lesions"]) > 0) == tumour
        kinds = {c["kind"] for c in slide["confounders"]}
        assert kinds <= set(CONFOUNDERS)
        seen |= kinds
        for item in slide["confounders"] + slide["lesions"]:
            x0, y0, x1, y1 = item["box"]
            assert 0 <= x0 < x1 <= slide["width"] and 0 <= y0 < y1 <= slide["height"]
    assert {"germinal", "lymphoid"} <= seen
    assert [s["centre"] for s in meta["slides"] if s["split"] == "test"] == ["test", "test"]


def test_ground_truth_classes_match_the_source_shapes(small: Path) -> None:
    table = {s.key: s for s in load_table().shapes}
    for slide in _metadata(small)["slides"]:
        if slide["label"] != "tumor":
            continue
        polygons = [p for p in read_asap_xml(layout.xml_path(small, slide["name"])) if p.is_tumor]
        generated = Counter(classify(feret_px(p.vertices) * MPP) for p in polygons)
        source = Counter(table[lesion["shape"]].lesion_class for lesion in slide["lesions"])
        assert generated == source
        # the organisers' evaluation on the level-5 mask sees the same ITC / non-ITC split
        mask = read_mask_level(layout.mask_path(small, slide["name"]), 5) > 0
        labels = evaluation_mask(mask, 5, MPP)
        itc = itc_labels(labels, 5, MPP)
        assert int(labels.max()) == sum(source.values())
        assert len(itc) == source["itc"]


def test_deterministic_for_a_seed(small: Path, tmp_path: Path) -> None:
    for sub in (layout.IMAGES_DIR, layout.ANNOTATIONS_DIR, layout.JSONS_DIR, layout.MASKS_DIR):
        (tmp_path / sub).mkdir()
    spec = HardSpec("test_001", "tumor", "test", "test", "micro", 0)
    write_hard_slide(tmp_path, spec, _small_config(tmp_path))
    for path_of in (layout.image_path, layout.mask_path, layout.xml_path, layout.json_path):
        assert _sha(path_of(tmp_path, "test_001")) == _sha(path_of(small, "test_001"))
    write_hard_slide(tmp_path, spec, _small_config(tmp_path, seed=SEED + 1))
    assert _sha(layout.image_path(tmp_path, "test_001")) != _sha(
        layout.image_path(small, "test_001")
    )


def test_a_confounder_switched_off_changes_only_its_boxes(small: Path, tmp_path: Path) -> None:
    """Streams are independent: without folds, pen and blur only their boxes' tiles differ."""
    slide = next(s for s in _metadata(small)["slides"] if s["name"] == "normal_001")
    off = {"fold", "pen", "blur"}
    for sub in (layout.IMAGES_DIR,):
        (tmp_path / sub).mkdir()
    spec = HardSpec("normal_001", "normal", "train", "train", "none", 0)
    config = _small_config(tmp_path, confounders=frozenset(CONFOUNDERS) - off)
    write_hard_slide(tmp_path, spec, config)
    full = tifffile.imread(layout.image_path(small, "normal_001"), key=0)
    reduced = tifffile.imread(layout.image_path(tmp_path, "normal_001"), key=0)
    changed = np.zeros(full.shape[:2], bool)
    for item in slide["confounders"]:
        if item["kind"] in off:
            x0, y0, x1, y1 = item["box"]
            pad = 32  # blur reach, then whole JPEG tiles
            changed[
                max(0, y0 - pad) // 256 * 256 : (y1 + pad + 255) // 256 * 256,
                max(0, x0 - pad) // 256 * 256 : (x1 + pad + 255) // 256 * 256,
            ] = True
    np.testing.assert_array_equal(full[~changed], reduced[~changed])


@pytest.mark.slow
def test_macro_slide_of_the_default_test_split(tmp_path: Path) -> None:
    """A full-size macro test slide: real macro-metastasis, GT classes, tissue budget."""
    for sub in (layout.IMAGES_DIR, layout.ANNOTATIONS_DIR, layout.JSONS_DIR, layout.MASKS_DIR):
        (tmp_path / sub).mkdir()
    table = load_table()
    spec = next(
        s
        for s in plan_specs(HardConfig(out=tmp_path), table)
        if s.lesion_kind == "macro" and s.split == "test"
    )
    slide = write_hard_slide(tmp_path, spec, HardConfig(out=tmp_path, seed=SEED))
    assert slide.plan.lesions[0].lesion_class == "macro"
    mask = read_mask_level(layout.mask_path(tmp_path, spec.name), 5) > 0
    labels = evaluation_mask(mask, 5, MPP)
    assert int(labels.max()) == len(slide.plan.lesions)
    classes = Counter(p.lesion_class for p in slide.plan.lesions)
    assert len(itc_labels(labels, 5, MPP)) == classes["itc"]
    cells = slide.plan.tissue_raster().sum() / 16  # 16 planning pixels per mask cell
    assert cells < 10_000
