"""The projection: seconds for a slide of 1M tissue cells from the best passing decode and
network rates, next to the MONAI bundle's ~9 minutes and the 20 s goal (docs/gpu_probe.md)."""

from __future__ import annotations

from wsi_bench.gpu_probe.config import (
    GOAL_SECONDS,
    MONAI_READ_FACTOR,
    MONAI_SECONDS,
    SLIDE_CELLS,
    Json,
)
from wsi_bench.gpu_probe.report import Probe
from wsi_tumor import contract


def project(
    decode_mp_s: dict[str, float],
    network_cells_s: dict[str, float],
    dense_cells: int | None,
    cells: int = SLIDE_CELLS,
) -> Json:
    """Projected seconds for a slide of ``cells`` tissue cells.

    Decode reads each level-0 tissue pixel once (64 x 64 per cell); with per-region reads a
    dense region of side 224 + (k - 1) * 64 covers k * k cells, so it decodes side**2 / k**2
    px per cell. Decode and network overlap (max); the serial sum bounds a GPU that does both.

    Args:
        decode_mp_s: Decode rate per decoder ("cpu", "device"), megapixels per second.
        network_cells_s: Best passing network rate per mode ("dense", "exact").
        dense_cells: k of the best dense shape (for the per-region read figure).
        cells: Tissue cells of the slide.
    """
    px_once = cells * contract.PATCH_STRIDE**2
    decode_s = {name: px_once / (rate * 1e6) for name, rate in decode_mp_s.items() if rate > 0}
    rows: list[Json] = []
    for mode, rate in network_cells_s.items():
        network_s = cells / rate
        for decoder, seconds in decode_s.items():
            rows.append(
                {
                    "mode": mode,
                    "decoder": decoder,
                    "decode_s": seconds,
                    "network_s": network_s,
                    "overlapped_s": max(seconds, network_s),
                    "serial_s": seconds + network_s,
                    "vs_monai": MONAI_SECONDS / max(seconds, network_s),
                    "meets_goal": max(seconds, network_s) <= GOAL_SECONDS,
                }
            )
    result: Json = {
        "cells": cells,
        "tissue_gpx_read_once": px_once / 1e9,
        "monai_s": MONAI_SECONDS,
        "goal_s": GOAL_SECONDS,
        "rows": rows,
        "decode_s_monai_reads": {d: s * MONAI_READ_FACTOR for d, s in decode_s.items()},
    }
    if dense_cells:
        factor = contract.region_size(dense_cells) ** 2 / (
            dense_cells**2 * contract.PATCH_STRIDE**2
        )
        result["dense_region_read_factor"] = factor
        result["decode_s_region_reads"] = {d: s * factor for d, s in decode_s.items()}
    if rows:
        result["best"] = min(rows, key=lambda r: float(r["overlapped_s"]))
    return result


def project_probe(probe: Probe, device_type: str) -> Json:
    """:func:`project` from a run's best passing numbers, with those rows and the measured
    pipeline's seconds per slide.

    Args:
        probe: The run's record (decode and network stages done).
        device_type: "cuda" or "cpu"; a CPU "device" decode is not projected twice.
    """
    decode_rates: dict[str, float] = {}
    if "cpu" in probe.decode:
        decode_rates["cpu"] = probe.decode["cpu"]["all_threads_mp_s"]
    batches = (probe.decode.get("device") or {}).get("batches") or []
    if batches and device_type == "cuda":
        decode_rates["device"] = max(b["mp_s"] for b in batches)
    best = {mode: probe.best_row(mode) for mode in ("dense", "exact")}
    network_rates = {mode: row["cells_per_s"] for mode, row in best.items() if row}
    dense_k = best["dense"]["cells"] if best["dense"] else None
    projection = project(decode_rates, network_rates, dense_k)
    projection["network_best"] = best
    if probe.pipeline.get("overlapped_cells_per_s"):
        rate = probe.pipeline["overlapped_cells_per_s"]
        projection["measured_pipeline_s"] = SLIDE_CELLS / rate
    return projection
