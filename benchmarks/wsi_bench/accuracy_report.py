"""What ``make accuracy`` measured, gathered and written (results.json, report.md, curves)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_tumor import contract
from wsi_tumor.evaluation.agreement import BOOTSTRAP_RESAMPLES
from wsi_tumor.fileio import write_json, write_text

if TYPE_CHECKING:
    from wsi_bench.accuracy_paths import AccuracyPaths

FROC_RANGE = (0.5, 0.95)
"""The exact mode's FROC must land here: the benchmark can tell better from worse."""
DENSE_FROC_BUDGET, DENSE_AUC_BUDGET = 0.02, 0.01
"""How far the dense mode may fall from the exact mode."""


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _groups(meta: dict[str, Any]) -> set[str]:
    kinds = {c["kind"] for c in meta.get("confounders", [])}
    if meta.get("centre") == "test":
        kinds.add("stain")
    return kinds


def confounder_table(
    tests: dict[str, dict[str, Any]], per_mode: dict[str, dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per confounder and mode: lesion sensitivity and FPs/slide with and without it.

    Sensitivity here is lesions hit / lesions (any candidate in the lesion, every
    threshold), FPs per slide are the candidates outside lesions; both come from the
    per-slide rows of ``froc.json``.
    """
    from wsi_tumor.data.hard import CONFOUNDERS

    rows = []
    for kind in CONFOUNDERS:
        row: dict[str, Any] = {"confounder": kind}
        having = {name for name, meta in tests.items() if kind in _groups(meta)}
        row["slides_with"] = len(having)
        for mode, slides in per_mode.items():
            for label, members in (("with", having), ("without", set(tests) - having)):
                chosen = [slides[name] for name in members if name in slides]
                lesions = sum(s["lesions"] for s in chosen)
                hit = sum(s["lesions_hit"] for s in chosen)
                row[f"{mode}_sensitivity_{label}"] = round(hit / lesions, 3) if lesions else None
                row[f"{mode}_fp_per_slide_{label}"] = (
                    round(sum(s["fp"] for s in chosen) / len(chosen), 2) if chosen else None
                )
        rows.append(row)
    return rows


def false_positives_on(
    paths: AccuracyPaths, mode: str, tests: dict[str, dict[str, Any]], level: int
) -> dict[str, int]:
    """How many of a mode's false-positive candidates lie on each confounder, and in all.

    A candidate is false as in the FROC (the evaluation mask's label 0 under it); it lies on a
    confounder when it falls in the bounding box of one of that kind on its slide (``stain``:
    on a test-centre slide). Answers what germinal centres and lymphoid tissue cost, which
    are on nearly every slide and so cannot be grouped by slide.
    """
    from wsi_tumor.data.hard import CONFOUNDERS
    from wsi_tumor.evaluation.froc import detection_labels
    from wsi_tumor.evaluation.groundtruth import find_ground_truth, load_tumour_mask, slide_geometry
    from wsi_tumor.evaluation.masks import evaluation_mask
    from wsi_tumor.evaluation.nms import read_detections

    counts = dict.fromkeys(["all", *CONFOUNDERS], 0)
    for name, meta in tests.items():
        path = paths.predictions(mode) / f"{name}.csv"
        if not path.is_file():
            continue
        det = np.asarray(read_detections(path), np.float64).reshape(-1, 3)
        geometry = slide_geometry(paths.data / "images", name)
        tumour = load_tumour_mask(find_ground_truth(paths.data / "masks", name), level, geometry)
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


def agreement(paths: AccuracyPaths, slides: Sequence[str]) -> dict[str, Any]:
    """Dense vs exact maps: per slide and pooled over every tissue cell; candidates."""
    from wsi_tumor.evaluation.agreement import (
        MATCH_RADIUS_CELLS,
        map_agreement,
        matched_detections,
    )
    from wsi_tumor.evaluation.nms import read_detections

    exact_cells, dense_cells, per_slide = [], [], {}
    both = only_exact = only_dense = 0
    for name in slides:
        exact = np.load(paths.predictions("exact") / f"{name}.npy")
        dense = np.load(paths.predictions("dense") / f"{name}.npy")
        cells = (exact != 0) | (dense != 0)
        per_slide[name] = map_agreement(exact, dense, cells).to_json()
        exact_cells.append(exact[cells])
        dense_cells.append(dense[cells])
        report = _json(paths.predictions("exact") / f"{name}.json")
        scale = report["resolution"]["slide_px_per_view_px"]
        found = matched_detections(
            read_detections(paths.predictions("exact") / f"{name}.csv"),
            read_detections(paths.predictions("dense") / f"{name}.csv"),
            MATCH_RADIUS_CELLS * contract.PATCH_STRIDE * scale,
        )
        both, only_exact, only_dense = both + found[0], only_exact + found[1], only_dense + found[2]
    exact_all, dense_all = np.concatenate(exact_cells)[None], np.concatenate(dense_cells)[None]
    pooled = map_agreement(exact_all, dense_all, np.ones(exact_all.shape, bool)).to_json()
    pooled["candidates"] = {"both": both, "only_exact": only_exact, "only_dense": only_dense}
    return {"pooled": pooled, "per_slide": per_slide}


def difference_intervals(
    paths: AccuracyPaths, tests: dict[str, Any], scores: dict[str, Any]
) -> dict[str, list[float]]:
    """95 % paired-bootstrap intervals of dense - exact FROC and slide-level AUC.

    Slides are resampled with replacement, tumour and normal slides separately, and both
    modes are scored on the same resample, so the interval says how far the difference
    moves with the choice of test slides alone.
    """
    from wsi_tumor.evaluation.agreement import bootstrap_interval
    from wsi_tumor.evaluation.evaluate import FrocConfig, evaluate_directory
    from wsi_tumor.evaluation.froc import froc_curve, froc_score
    from wsi_tumor.evaluation.slide_level import roc_auc

    names = sorted(tests)
    slides, eval_fps = {}, {}
    for mode in ("exact", "dense"):
        # the settings wsi-froc scored this mode with, so each resample is scored the same way
        settings = _json(paths.froc(mode) / "froc.json")["settings"]
        config = FrocConfig.build(**{f.name: settings[f.name] for f in fields(FrocConfig)})
        report = evaluate_directory(
            paths.predictions(mode), paths.data / "masks", config, paths.data / "images"
        )
        by_name = {record.result.name: record.result for record in report.slides}
        slides[mode], eval_fps[mode] = [by_name[name] for name in names], config.eval_fps
    labels = np.array([tests[name]["label"] == "tumor" for name in names])
    slide_scores = {m: np.array([scores[m]["slide_scores"][n] for n in names]) for m in slides}
    strata = [np.flatnonzero(labels), np.flatnonzero(~labels)]

    def froc(mode: str, drawn: np.ndarray) -> float:
        curve = froc_curve([slides[mode][i] for i in drawn])
        return froc_score(*curve[:2], eval_fps[mode])[0]

    def auc(mode: str, drawn: np.ndarray) -> float:
        return roc_auc(labels[drawn], slide_scores[mode][drawn])

    def dense_minus_exact(score: Callable[[str, np.ndarray], float]) -> list[float]:
        return list(bootstrap_interval(lambda d: score("dense", d) - score("exact", d), strata))

    return {"froc": dense_minus_exact(froc), "auc": dense_minus_exact(auc)}


def collect(paths: AccuracyPaths, modes: Sequence[str]) -> dict[str, Any]:
    """Scores of each mode, map agreement and the confounder table, from the run's files."""
    dataset = _json(paths.data / "dataset.json")
    tests = {s["name"]: s for s in dataset["slides"] if s["split"] == "test"}
    results: dict[str, Any] = {"modes": {}, "dataset": {
        "preset": dataset.get("config", {}).get("preset"),
        "test_slides": len(tests),
        "tumour_test_slides": sum(s["label"] == "tumor" for s in tests.values()),
        "lesions_by_class": _lesion_classes(tests.values()),
    }}  # fmt: skip
    per_mode, levels = {}, {}
    for mode in modes:
        froc = _json(paths.froc(mode) / "froc.json")
        per_mode[mode] = {s["slide"]: s for s in froc["per_slide"]}
        levels[mode] = int(froc["settings"]["level"])
        results["modes"][mode] = {
            "froc": froc["froc"],
            "sensitivity_at_fp": froc["sensitivity_at_fp"],
            "auc": froc["slide_level"]["auc"],
            "slide_scores": {s["slide"]: s["score"] for s in froc["slide_level"]["per_slide"]},
            "fp": froc["fp"],
            "lesions": froc["lesions"],
            "itc": froc["itc"],
            "lesions_hit": froc["lesions_hit"],
            "patches_per_s": _mean_speed(paths.predictions(mode), tests),
        }
    results["per_slide"] = {
        name: {
            "label": meta["label"],
            "centre": meta.get("centre"),
            "confounders": sorted(_groups(meta)),
            **{
                f"{mode}_{key}": per_mode[mode].get(name, {}).get(key)
                for mode in modes
                for key in ("lesions", "lesions_hit", "fp")
            },
        }
        for name, meta in sorted(tests.items())
    }
    results["confounders"] = confounder_table(tests, per_mode)
    for mode in modes:
        on = false_positives_on(paths, mode, tests, levels[mode])
        results["modes"][mode]["fp_on_confounders"] = on
        for row in results["confounders"]:
            row[f"{mode}_fp_on_it"] = on[row["confounder"]]
    if {"exact", "dense"} <= set(modes):
        results["agreement"] = agreement(paths, sorted(tests))
        results["difference_interval_95"] = difference_intervals(paths, tests, results["modes"])
        exact, dense = results["modes"]["exact"], results["modes"]["dense"]
        low, high = FROC_RANGE
        results["targets"] = {
            f"exact FROC in [{low}, {high}]": low <= exact["froc"] <= high,
            "exact slide-level AUC < 1.0": exact["auc"] < 1.0,
            f"|dense - exact| FROC <= {DENSE_FROC_BUDGET}": abs(dense["froc"] - exact["froc"])
            <= DENSE_FROC_BUDGET,
            f"|dense - exact| AUC <= {DENSE_AUC_BUDGET}": abs(dense["auc"] - exact["auc"])
            <= DENSE_AUC_BUDGET,
        }
    return results


def _lesion_classes(slides: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for meta in slides:
        for lesion in meta.get("lesions", []):
            counts[lesion["class"]] = counts.get(lesion["class"], 0) + 1
    return counts


def _mean_speed(predictions: Path, tests: dict[str, Any]) -> float:
    reports = [predictions / f"{name}.json" for name in tests]
    patches = sum(_json(p)["counts"]["patches"] for p in reports if p.is_file())
    seconds = sum(_json(p)["timings_s"]["stream"] for p in reports if p.is_file())
    return round(patches / seconds, 1) if seconds else 0.0


def _model_line(settings: dict[str, Any]) -> str:
    if settings.get("checkpoint"):
        return f"the weights in `{settings['checkpoint']}`"
    line = (
        f"the demo's recipe ({settings['epochs']} epochs x {settings['steps_per_epoch']} steps "
        f"of {settings['batch_size']} regions, `--objective patch`, fp32: `--no-amp`)"
    )
    if settings["finetune_steps"]:
        line += (
            f", then {settings['finetune_steps']} fine-tuning steps with `--objective mixed "
            f"--consistency {settings['consistency']}` (whole regions and their patches, the "
            "dense logits pulled toward the patches')"
        )
    return line


def _interval_line(results: dict[str, Any]) -> str:
    modes, interval = results["modes"], results["difference_interval_95"]
    parts = []
    budgets = (("froc", "FROC", DENSE_FROC_BUDGET), ("auc", "AUC", DENSE_AUC_BUDGET))
    for key, label, budget in budgets:
        low, high = interval[key]
        inside = -budget <= low and high <= budget
        parts.append(
            f"{label} {modes['dense'][key] - modes['exact'][key]:+.3f}, 95 % interval "
            f"[{low:+.3f}, {high:+.3f}] ({'inside' if inside else 'not inside'} +-{budget})"
        )
    return (
        f"Uncertainty (paired bootstrap over the test slides, {BOOTSTRAP_RESAMPLES} resamples "
        "drawing tumour and normal slides separately, both modes scored on each): dense - exact "
        + "; ".join(parts)
        + ". An interval that is not inside the budget means this test set cannot show the "
        "two modes equal to within it, whatever the single run's PASS or MISS."
    )


def render_markdown(results: dict[str, Any]) -> str:
    """report.md."""
    machine, modes = results["machine"], results["modes"]
    lines = [
        "# wsi-tumor accuracy benchmark (hard synthetic set)",
        "",
        f"Generated {results['date']} by `{results['command']}` in {results['duration_s']:.0f} s "
        f"on {machine['cpu_model']} ({machine['logical_cores']} logical cores); the exported "
        f"classifier runs at **{results['classifier_patches_per_s']:.0f} patches/s** here "
        "(ONNX Runtime, batch 32; runners of this kind range from about 45 to 120).",
        "",
        f"Test set: {results['dataset']['test_slides']} slides "
        f"({results['dataset']['tumour_test_slides']} with tumour), lesions by class "
        f"{results['dataset']['lesions_by_class']} (real CAMELYON16 shapes).",
        "",
        f"Model (both modes): {_model_line(results['settings'])}.",
        "",
        "## Scores",
        "",
        "| mode | FROC | "
        + " | ".join(f"sens @ {k} FP" for k in modes["exact"]["sensitivity_at_fp"])
        + " | slide AUC | FP | lesions hit | cells/s |",
        "|---|---|" + "---|" * len(modes["exact"]["sensitivity_at_fp"]) + "---|---|---|---|",
    ]
    for mode, s in modes.items():
        lines.append(
            f"| {mode} | **{s['froc']:.4f}** | "
            + " | ".join(f"{v:.3f}" for v in s["sensitivity_at_fp"].values())
            + f" | **{s['auc']:.4f}** | {s['fp']} | {s['lesions_hit']}/{s['lesions']} | "
            f"{s['patches_per_s']:.1f} |"
        )
    if "targets" in results:
        lines += ["", "## Targets", ""]
        lines += [
            f"- {'PASS' if ok else 'MISS'}: {name}" for name, ok in results["targets"].items()
        ]
        lesions = modes["exact"]["lesions"]
        if lesions:
            lines += [
                "",
                f"Resolution: one of the {lesions} lesions found at one more or one fewer of the "
                f"six FP rates moves the FROC by 1 / (6 x {lesions}) = {1 / (6 * lesions):.4f}.",
            ]
        if "difference_interval_95" in results:
            lines += ["", _interval_line(results)]
    if "agreement" in results:
        pooled = results["agreement"]["pooled"]
        lines += [
            "",
            "## Dense vs exact maps",
            "",
            f"Over {pooled['cells']} tissue cells of the test set: max |diff| "
            f"{pooled['max_abs_diff']:.3f}, mean |diff| {pooled['mean_abs_diff']:.4f}, Pearson "
            f"{pooled['pearson']:.4f}, the same side of 0.5 in "
            f"{100 * pooled['decision_agreement']:.2f} % of cells; lesion candidates: "
            f"{pooled['candidates']['both']} found by both, {pooled['candidates']['only_exact']} "
            f"only exact, {pooled['candidates']['only_dense']} only dense.",
        ]
    lines += [
        "",
        "## What each confounder costs (per-slide results grouped)",
        "",
        "FPs on it = false-positive candidates inside a confounder of that kind (its bounding "
        "box; stain: on test-centre slides), of all the mode's FPs. Sensitivity = lesions hit "
        "/ lesions on the tumour slides with (without) the confounder; FP/slide over every "
        "slide with (without) it.",
        "",
        "| confounder | slides | exact FPs on it | dense FPs on it | exact sens with / without "
        "| exact FP/slide with / without | dense sens with / without | dense FP/slide with / "
        "without |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["confounders"]:
        cells = [
            f"{row[f'{mode}_fp_on_it']} of {modes[mode]['fp_on_confounders']['all']}"
            for mode in ("exact", "dense")
        ]
        for mode in ("exact", "dense"):
            for key in ("sensitivity", "fp_per_slide"):
                pair = (row.get(f"{mode}_{key}_with"), row.get(f"{mode}_{key}_without"))
                cells.append(" / ".join("-" if v is None else f"{v}" for v in pair))
        lines.append(f"| {row['confounder']} | {row['slides_with']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Per slide",
        "",
        "| slide | label | centre | confounders | exact lesions hit | exact FP | "
        "dense lesions hit | dense FP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in results["per_slide"].items():
        lines.append(
            f"| {name} | {s['label']} | {s['centre']} | {', '.join(s['confounders'])} | "
            f"{s['exact_lesions_hit']}/{s['exact_lesions']} | {s['exact_fp']} | "
            f"{s['dense_lesions_hit']}/{s['dense_lesions']} | {s['dense_fp']} |"
        )
    lines += ["", "## Timings", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {s['name']} | {s['seconds']:.0f} |" for s in results["stages"]]
    lines += [
        "",
        "Curves: ![FROC exact](froc_exact.png) ![FROC dense](froc_dense.png) "
        "![ROC exact](roc_exact.png) ![ROC dense](roc_dense.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(results: dict[str, Any], paths: AccuracyPaths, out: Path) -> Path:
    """Write results.json, report.md and the curve PNGs under ``out``; return report.md."""
    out.mkdir(parents=True, exist_ok=True)
    for mode in results["modes"]:
        for curve in ("froc", "roc"):
            source = paths.froc(mode) / f"{curve}_curve.png"
            if source.is_file():
                shutil.copyfile(source, out / f"{curve}_{mode}.png")
    write_json(out / "results.json", results)
    return write_text(out / "report.md", render_markdown(results))
