"""What one seed's runs measured, read back from the files the commands wrote."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsi_bench.accuracy.recipe import Levers, SeedPaths
from wsi_tumor.data import layout


def read_json(path: Path) -> Any:
    """A JSON file's content."""
    return json.loads(path.read_text(encoding="utf-8"))


def test_slides(paths: SeedPaths) -> dict[str, dict[str, Any]]:
    """The generator's record of each test slide (label, centre, lesions, confounders)."""
    dataset = read_json(paths.data / layout.METADATA_JSON)
    return {s["name"]: s for s in dataset["slides"] if s["split"] == "test"}


def lesion_classes(slides: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Lesions of the slides by class (itc, micro, macro)."""
    counts: dict[str, int] = {}
    for meta in slides:
        for lesion in meta.get("lesions", []):
            counts[lesion["class"]] = counts.get(lesion["class"], 0) + 1
    return counts


def false_positives_on(
    predictions: Path, data: Path, tests: dict[str, dict[str, Any]], level: int
) -> dict[str, int]:
    """How many false-positive candidates lie on each kind of confounder, and in all.

    A candidate is false as in the FROC (the evaluation mask's label 0 under it); it lies on a
    confounder when it falls in the bounding box of one of that kind on its slide (``stain``:
    any candidate of a test-centre slide).
    """
    from wsi_tumor.data.hard import CONFOUNDERS
    from wsi_tumor.evaluation.froc import detection_labels
    from wsi_tumor.evaluation.groundtruth import find_ground_truth, load_tumour_mask, slide_geometry
    from wsi_tumor.evaluation.masks import evaluation_mask
    from wsi_tumor.evaluation.nms import read_detections

    counts = dict.fromkeys(["all", *CONFOUNDERS], 0)
    for name, meta in tests.items():
        path = predictions / f"{name}.csv"
        if not path.is_file():
            continue
        det = np.asarray(read_detections(path), np.float64).reshape(-1, 3)
        geometry = slide_geometry(data / layout.IMAGES_DIR, name)
        tumour = load_tumour_mask(find_ground_truth(data / layout.MASKS_DIR, name), level, geometry)
        if tumour is not None:
            labels = np.asarray(evaluation_mask(tumour, level, geometry.mpp))
            det = det[detection_labels(name, det, labels, level) == 0]
        counts["all"] += len(det)
        for kind in CONFOUNDERS:
            on = np.full(len(det), kind == "stain" and meta.get("centre") == "test")
            for confounder in meta.get("confounders", []):
                if confounder["kind"] == kind:
                    x0, y0, x1, y1 = confounder["box"]
                    on |= (
                        (det[:, 1] >= x0) & (det[:, 1] < x1) & (det[:, 2] >= y0) & (det[:, 2] < y1)
                    )
            counts[kind] += int(on.sum())
    return counts


def _speed(predictions: Path, tests: dict[str, Any]) -> float:
    reports = [read_json(p) for p in (predictions / f"{n}.json" for n in tests) if p.is_file()]
    seconds = sum(r["timings_s"]["stream"] for r in reports)
    return round(sum(r["counts"]["patches"] for r in reports) / seconds, 1) if seconds else 0.0


def mode_scores(paths: SeedPaths, levers: Levers, mode: str) -> dict[str, Any]:
    """FROC, sensitivities, both slide-level AUCs, candidates and speed of one mode."""
    froc = read_json(paths.froc(levers, mode) / "froc.json")
    aucs = froc["slide_level"]["auc_by_score"]
    tests = test_slides(paths)
    predictions = paths.predictions(levers, mode)
    return {
        "froc": froc["froc"],
        "sensitivity_at_fp": froc["sensitivity_at_fp"],
        "auc_map_max": aucs["map-max"],
        "auc_classifier": aucs.get("classifier"),
        "auc": aucs.get("classifier") if levers.slide_classifier else aucs["map-max"],
        "fp": froc["fp"],
        "lesions": froc["lesions"],
        "lesions_hit": froc["lesions_hit"],
        "slides": {s["slide"]: s for s in froc["per_slide"]},
        "fp_on_confounders": false_positives_on(
            predictions, paths.data, tests, int(froc["settings"]["level"])
        ),
        "cells_per_s": _speed(predictions, tests),
    }


def agreement(a_dir: Path, b_dir: Path, slides: Sequence[str]) -> dict[str, Any]:
    """Map ``b`` against map ``a`` pooled over every tissue cell of the slides."""
    from wsi_tumor.evaluation.agreement import map_agreement

    a_cells, b_cells = [], []
    for name in slides:
        a, b = np.load(a_dir / f"{name}.npy"), np.load(b_dir / f"{name}.npy")
        cells = (a != 0) | (b != 0)
        a_cells.append(a[cells])
        b_cells.append(b[cells])
    a_all, b_all = np.concatenate(a_cells)[None], np.concatenate(b_cells)[None]
    pooled = map_agreement(a_all, b_all, np.ones(a_all.shape, bool)).to_json()
    pooled["cells_other_side_of_05"] = round((1 - pooled["decision_agreement"]) * a_all.size)
    return pooled


def mining(paths: SeedPaths, levers: Levers) -> dict[str, Any] | None:
    """What ``wsi-mine`` reported for the variant's first model (None without mining)."""
    path = (paths.base(levers) / layout.HARD_NEGATIVE_TRAIN).with_suffix(".json")
    if not levers.hard_negatives or not path.is_file():
        return None
    summary = read_json(path)
    return {k: summary[k] for k in ("candidates", "mined", "cap", "by_confounder", "settings")}


def collect_seed(
    paths: SeedPaths, variants: Sequence[Levers], final: Levers, modes: Sequence[str]
) -> dict[str, Any]:
    """Everything measured on one seed: per variant and mode, agreements, mining, dataset."""
    tests = test_slides(paths)
    result: dict[str, Any] = {
        "dataset": {
            "test_slides": len(tests),
            "tumour_test_slides": sum(s["label"] == "tumor" for s in tests.values()),
            "lesions_by_class": lesion_classes(list(tests.values())),
        },
        "variants": {},
    }
    for levers in variants:
        result["variants"][variant_key(levers)] = {"dense": mode_scores(paths, levers, "dense")}
    runs = result["variants"][variant_key(final)]
    names = sorted(tests)
    for mode in modes:
        if mode != "dense":
            runs[mode] = mode_scores(paths, final, mode)
    if "exact" in runs:
        result["dense_vs_exact"] = agreement(
            paths.predictions(final, "exact"), paths.predictions(final, "dense"), names
        )
    if "dense-int8" in runs:
        result["int8_vs_fp32"] = agreement(
            paths.predictions(final, "dense"), paths.predictions(final, "dense-int8"), names
        )
    # the recipe's mining, else the ablation's hard-negative variant's
    mined = (mining(paths, levers) for levers in (final, *variants))
    result["mining"] = next((m for m in mined if m is not None), None)
    result["per_slide"] = {
        name: {
            "label": meta["label"],
            "centre": meta.get("centre"),
            "confounders": sorted({c["kind"] for c in meta.get("confounders", [])}),
        }
        for name, meta in sorted(tests.items())
    }
    return result


def variant_key(levers: Levers) -> str:
    """The key a variant's results are stored under."""
    return f"{levers.model_key}{'+classifier' if levers.slide_classifier else ''}"
