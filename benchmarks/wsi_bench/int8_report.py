"""The INT8 part of the benchmark report: targets, the INT8 section, perf ratios.

Targets (issue 29): dense INT8 (f) >= 20x the MONAI baseline (a) and >= 1.7x dense FP32 (d);
exact INT8 (e) >= 1.7x exact FP32 (b); each INT8 map's Pearson against its FP32 map on the
tissue cells >= 0.99. The speed targets assume an 8-bit dot-product instruction (VNNI or
AMX); on a CPU without one the report says so, and a VNNI runner's figures decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wsi_bench import Target

SPEED_TARGETS = (
    ("f", "a", 20.0, "dense INT8 vs the MONAI baseline (cells/s)"),
    ("f", "d", 1.7, "dense INT8 vs dense FP32 (cells/s)"),
    ("e", "b", 1.7, "exact INT8 vs exact FP32 (patches/s)"),
)
"""(numerator way, denominator way, goal, what) of the INT8 speed targets."""
PEARSON_GOAL = 0.99


def precision_of(row: Mapping[str, Any]) -> str:
    """A perf row's precision (rows of reports before INT8 are fp32)."""
    return str(row.get("precision", "fp32"))


def int8_targets(results: Mapping[str, Any]) -> list[Target]:
    """The INT8 targets of a results dict (none when the run measured no INT8 way)."""
    int8 = results.get("int8")
    ways = {way["key"]: way for way in results["ways"]}
    if not int8:
        return []
    caveat = "" if int8.get("dot_product") else " (this CPU has no VNNI/AMX)"
    targets = []
    for num, den, goal, what in SPEED_TARGETS:
        if num in ways and den in ways:
            n, d = ways[num], ways[den]
            targets.append(
                Target(
                    f"{num}/{den}: {what}",
                    n["patches_per_s"] / d["patches_per_s"],
                    goal,
                    f"{n['patches_per_s']:.1f} vs {d['patches_per_s']:.1f}{caveat}",
                )
            )
    for pair, stats in int8.get("agreement", {}).items():
        pearson = stats["pearson"]
        targets.append(
            Target(
                f"INT8 vs FP32 map ({pair.replace('-', ' vs ')}): Pearson on tissue cells",
                0.0 if pearson is None else pearson,
                PEARSON_GOAL,
                f"{stats['cells']} cells, mean |diff| {stats['mean_abs_diff']:.4f}, max "
                f"{stats['max_abs_diff']:.3f}, {stats['flipped']} on the other side of 0.5",
            )
        )
    return targets


def perf_ratios(perf: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """INT8 / FP32 perf_analyzer throughput of each (model, patches/request, concurrency)."""
    fp32 = {
        (r["model"], r["patches_per_request"], r["concurrency"]): r
        for r in perf
        if precision_of(r) == "fp32"
    }
    rows = []
    for r in perf:
        key = (r["model"], r["patches_per_request"], r["concurrency"])
        if precision_of(r) == "int8" and key in fp32 and fp32[key]["patches_per_s"]:
            rows.append(
                {
                    "model": r["model"],
                    "patches_per_request": r["patches_per_request"],
                    "concurrency": r["concurrency"],
                    "fp32": fp32[key]["patches_per_s"],
                    "int8": r["patches_per_s"],
                    "ratio": r["patches_per_s"] / fp32[key]["patches_per_s"],
                }
            )
    return rows


def _kernels(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{op} {n}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def render_int8(results: Mapping[str, Any]) -> list[str]:
    """The report's INT8 section (empty when the run measured no INT8 way)."""
    int8 = results.get("int8")
    if not int8:
        return []
    features = int8["cpu_features"]
    has = [flag for flag, present in features.items() if present]
    lacks = [flag for flag, present in features.items() if not present]
    lines = [
        "## INT8 (`wsi-export --precision int8`: ways (e) exact and (f) dense)",
        "",
        f"- CPU: has {', '.join(has) or 'none of them'}; lacks {', '.join(lacks) or 'none'}. "
        + (
            "It has an 8-bit dot-product instruction (VNNI/AMX), which ONNX Runtime's INT8 "
            "convolutions use."
            if int8["dot_product"]
            else "**No VNNI or AMX**: ONNX Runtime's INT8 convolutions multiply through "
            "saturating 16-bit sums here, not the 8-bit dot products of the runners the INT8 "
            "targets are set for; on this CPU the INT8 speed figures are a floor, and a VNNI "
            "runner's figures decide the targets."
        ),
    ]
    for model, counts in int8["kernels"].items():
        lines.append(
            f"- ONNX Runtime kernels of {model} (CPU provider, optimised graph): INT8 "
            f"repository: {_kernels(counts)}; FP32 repository: "
            f"{_kernels(int8['fp32_kernels'].get(model, {}))}"
        )
    for model, record in int8.get("records", {}).items():
        if not record:
            continue
        settings, calibration = record["settings"], record["calibration"]
        slides = ", ".join(
            f"{s['name']} ({s['patches']} patches, {s['regions']} regions)"
            for s in calibration["slides"]
        )
        lines.append(
            f"- {model}: {settings['method']} calibration, {settings['activations']} "
            f"activations, {settings['weights']} weights, {record['quantised_nodes']} nodes "
            f"quantised; calibrated on {calibration['patches']} patches and "
            f"{calibration['regions']} regions of k = {calibration['region_cells']} from "
            f"{slides}"
        )
    for pair, stats in int8.get("agreement", {}).items():
        pearson = "n/a" if stats["pearson"] is None else f"{stats['pearson']:.4f}"
        fp32, quantised = pair.split("-")
        lines.append(
            f"- map ({quantised}) INT8 vs ({fp32}) FP32 over {stats['cells']} tissue cells: "
            f"Pearson {pearson}, mean |diff| {stats['mean_abs_diff']:.4f}, max |diff| "
            f"{stats['max_abs_diff']:.3f}, {stats['flipped']} cells on the other side of 0.5"
        )
    ratios = perf_ratios(results["perf"])
    if ratios:
        lines += [
            "",
            "perf_analyzer, INT8 vs FP32 at the same point:",
            "",
            "| model | patches/request | concurrency | FP32 patches/s | INT8 patches/s | ratio |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['model']} | {r['patches_per_request']:g} | {r['concurrency']} | "
            f"{r['fp32']:.1f} | {r['int8']:.1f} | {r['ratio']:.2f} |"
            for r in ratios
        ]
    return [*lines, ""]
