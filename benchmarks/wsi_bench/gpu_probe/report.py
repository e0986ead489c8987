"""The record of one run (:class:`Probe`), the 1M-cell projection, and the report files
(JSON, the Markdown rendered from it, the check grids)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_bench.gpu_probe.plan import (
    GOAL_SECONDS,
    MONAI_READ_FACTOR,
    MONAI_SECONDS,
    SLIDE_CELLS,
    TARGET_LOGIT_STD,
    Json,
)
from wsi_bench.report_files import clean, fmt, table, write_outputs
from wsi_tumor import contract

logger = logging.getLogger(__name__)
REPORT_JSON, REPORT_MD, GRIDS_NPZ = "gpu_probe.json", "gpu_probe.md", "gpu_probe_grids.npz"


@dataclass
class Probe:
    """Everything one run measured (the JSON report is ``asdict`` of this, cleaned)."""

    config: Json
    environment: Json
    stages: dict[str, Json] = field(default_factory=dict)
    slide: Json = field(default_factory=dict)
    model: Json = field(default_factory=dict)
    decode: Json = field(default_factory=dict)
    network: list[Json] = field(default_factory=list)
    checks: list[Json] = field(default_factory=list)
    agreement: Json = field(default_factory=dict)
    projection: Json = field(default_factory=dict)
    elapsed_s: float = 0.0
    passed: bool = False
    abandoned: bool = False

    def add_check(self, entry: Json) -> None:
        """Record one correctness check and log its verdict."""
        self.checks.append(entry)
        verdict = "ok" if entry["passed"] else "FAILED"
        logger.info("check %s: %s (tolerance %s)", entry["name"], verdict, entry["tolerance"])

    def best_row(
        self, mode: str, eager_only: bool = False, variants: Sequence[str] | None = None
    ) -> Json | None:
        """The fastest passing network row of ``mode`` (eager or of ``variants`` if asked)."""
        rows = [r for r in self.network if r["mode"] == mode and r.get("passed")
                and r.get("cells_per_s") and not (eager_only and "+" in r["variant"])
                and (variants is None or r["variant"] in variants)]  # fmt: skip
        return max(rows, key=lambda r: r["cells_per_s"]) if rows else None


def project(decode: dict[str, float], network: dict[str, float], dense_k: int | None) -> Json:
    """Seconds for a slide of 1M tissue cells from decode rates (MP/s per decoder) and network
    rates (cells/s per mode): decode reads each level-0 tissue pixel once (64 x 64 per cell;
    per-region reads of the best dense k cost (224 + (k - 1) 64)**2 / (64 k)**2 of that), and
    decode and network overlap (max); the serial sum bounds a GPU that does both."""
    px_once = SLIDE_CELLS * contract.PATCH_STRIDE**2
    decode_s = {name: px_once / (rate * 1e6) for name, rate in decode.items() if rate > 0}
    rows: list[Json] = []
    for mode, rate in network.items():
        network_s = SLIDE_CELLS / rate
        for decoder, seconds in decode_s.items():
            overlapped = max(seconds, network_s)
            rows.append({"mode": mode, "decoder": decoder, "decode_s": seconds,
                         "network_s": network_s, "overlapped_s": overlapped,
                         "serial_s": seconds + network_s, "vs_monai": MONAI_SECONDS / overlapped,
                         "meets_goal": overlapped <= GOAL_SECONDS})  # fmt: skip
    result: Json = {"cells": SLIDE_CELLS, "tissue_gpx_read_once": px_once / 1e9,
                    "monai_s": MONAI_SECONDS, "goal_s": GOAL_SECONDS, "rows": rows}  # fmt: skip
    result["decode_s_monai_reads"] = {d: s * MONAI_READ_FACTOR for d, s in decode_s.items()}
    if dense_k:
        factor = contract.region_size(dense_k) ** 2 / (dense_k * contract.PATCH_STRIDE) ** 2
        result["dense_region_read_factor"] = factor
        result["decode_s_region_reads"] = {d: s * factor for d, s in decode_s.items()}
    if rows:
        result["best"] = min(rows, key=lambda r: float(r["overlapped_s"]))
    return result


def project_probe(probe: Probe, device_type: str) -> Json:
    """:func:`project` from a run's best passing rates (a CPU "device" decode not twice)."""
    rates = {"cpu": probe.decode["cpu"]["all_threads_mp_s"]} if "cpu" in probe.decode else {}
    batches = (probe.decode.get("device") or {}).get("batches") or []
    if batches and device_type == "cuda":
        rates["device"] = max(b["mp_s"] for b in batches)
    best = {mode: probe.best_row(mode) for mode in ("dense", "exact")}
    network = {mode: row["cells_per_s"] for mode, row in best.items() if row}
    projection = project(rates, network, best["dense"]["cells"] if best["dense"] else None)
    return {**projection, "network_best": best}


def write_report(probe: Probe, out: Path, elapsed_s: float, grids: dict[str, Any]) -> Json:
    """Write the JSON, the Markdown and the check grids atomically (copied to $OUT)."""
    probe.elapsed_s = elapsed_s
    report = clean(asdict(probe))
    files: dict[str, Any] = {REPORT_JSON: json.dumps(report, indent=1)}
    files[REPORT_MD] = render_markdown(report)
    if grids:

        def save(path: Path) -> None:
            with open(path, "wb") as handle:
                np.savez(handle, **grids)

        files[GRIDS_NPZ] = save
    write_outputs(out, files)
    return report


def render_markdown(report: Json) -> str:
    """The Markdown report: summary, projection, decode, network, checks, stages."""
    env, config, model = report["environment"], report["config"], report["model"]
    verdict = "PASS" if report["passed"] else "FAIL"
    lines = [
        "# GPU probe report",
        "",
        f"{env.get('device_name')} | torch {env.get('torch')} | torchvision "
        f"{env.get('torchvision')} | numpy {env.get('numpy')} | Python {env.get('python')} | "
        f"{env.get('cpu_count')} CPU cores | plan `{config['plan']}` | {fmt(report['elapsed_s'])}"
        f" s of a {fmt(config['budget_s'])} s budget | checks: **{verdict}**",
        "",
        f"Model: {model.get('source')}",
        "",
        "## Projected end to end, 1M tissue cells (4.1 Gpx at level 0, each decoded once)",
        "",
        *_projection(report.get("projection") or {}),
        *_decode(report.get("decode") or {}, report.get("slide") or {}),
        *_network(report.get("network", []), report.get("agreement") or {}),
        *_checks(report.get("checks", [])),
        "",
        "## Stages",
        "",
    ]
    if model.get("calibration"):
        lines[4] += (
            f" (1x1 head along the features' first principal axis, logit std {TARGET_LOGIT_STD};"
            " dense vs exact figures of random weights say nothing about trained ones)"
        )
    stages = report.get("stages", {}).items()
    rows = [[n, s["status"], s.get("seconds"), (s.get("note") or "")[:200]] for n, s in stages]
    return "\n".join(lines + table(["stage", "status", "s", "note"], rows)) + "\n"


def _projection(proj: Json) -> list[str]:
    if not proj.get("rows"):
        return ["No projection: a decode or network stage produced no passing number."]
    header = ["network", "decoder", "decode s", "network s", "overlapped s", "serial s",
              f"vs MONAI {MONAI_SECONDS:.0f} s", f"<= {GOAL_SECONDS:.0f} s"]  # fmt: skip
    rows = [
        [r["mode"], r["decoder"], r["decode_s"], r["network_s"], r["overlapped_s"], r["serial_s"],
         f"{fmt(r['vs_monai'])}x", r["meets_goal"]]
        for r in proj["rows"]
    ]  # fmt: skip
    monai = ", ".join(f"{d} {fmt(s)}" for d, s in proj["decode_s_monai_reads"].items())
    lines = [*table(header, rows), ""]
    lines.append(f"Decode seconds if every cell's 224 px patch were read (MONAI, 12.25x): {monai}")
    if "decode_s_region_reads" in proj:
        reads = ", ".join(f"{d} {fmt(s)}" for d, s in proj["decode_s_region_reads"].items())
        factor = fmt(proj["dense_region_read_factor"])
        lines.append(
            f"Decode seconds with per-region reads of the best dense k ({factor}x): {reads}"
        )
    return [
        *lines,
        "",
        "Not counted: disk reads, tissue mask, Triton transport, map assembly "
        "(`benchmarks/gpu_serve.py` measures the served path end to end). On A100/H100-class "
        "GPUs torchvision decodes baseline JPEG on nvJPEG's hardware engines, not the SMs, so "
        "decode and network can overlap; serial is the bound.",
    ]


def _decode(dec: Json, slide: Json) -> list[str]:
    lines = ["", "## Tile decode (raw tile bytes + JPEGTables merge -> RGB pixels)", ""]
    if "cpu" in dec:
        cpu = dec["cpu"]
        lines.append(
            f"CPU (torchvision/libjpeg-turbo): {fmt(cpu['one_thread_mp_s'])} MP/s on one thread, "
            f"{fmt(cpu['all_threads_mp_s'])} MP/s on {cpu['threads']} threads."
        )
    for b in (dec.get("device") or {}).get("batches", []):
        lines.append(f"- {dec['device']['type']} decode, batch {b['batch']}: {fmt(b['mp_s'])} MP/s")
    if slide:
        lines += [
            "",
            f"Slide: {slide.get('path')}, {slide.get('tiles')} tiles of {slide.get('tile')} px, "
            f"{fmt(slide.get('bits_per_pixel'))} bits/px, {slide.get('tiles_with_shared_tables')}"
            " sharing the page's JPEGTables.",
        ]
    return lines


def _network(rows: list[Json], agree: Json) -> list[str]:
    header = ["mode", "variant", "k", "regions", "cells/call", "cells/s", "first call s",
              "max abs dp", "tol", "ok"]  # fmt: skip
    cells = []
    for r in rows:
        check = r["check"] if isinstance(r.get("check"), dict) else {}
        ok = fmt(r.get("passed")) + (f" {r['error']}" if r.get("error") else "")
        cells.append([r["mode"], r["variant"], r["cells"], r["regions"], r["cells_per_call"],
                      r.get("cells_per_s"), r.get("first_call_s"), check.get("max_abs_prob"),
                      check.get("tolerance"), ok])  # fmt: skip
    lines = ["", "## Network (cells per second; every row checked against the float32 output)"]
    lines += ["", *table(header, cells)]
    if agree:
        lines += ["", "## Dense vs exact (same regions; they differ by design at patch borders)"]
        lines += [""] + [
            f"- {name}: {a['cells']} cells, max |dp| {fmt(a['max_abs_prob'])}, mean |dp| "
            f"{fmt(a['mean_abs_prob'])}, Pearson p {fmt(a['pearson_prob'])}, logits "
            f"{fmt(a['pearson_logit'])}"
            for name, a in agree.items()
        ]
    return lines


def _checks(checks: list[Json]) -> list[str]:
    passed = sum(bool(c["passed"]) for c in checks)
    lines = ["", "## Correctness checks", ""]
    lines.append(
        f"{passed} of {len(checks)} passed (timed batches: see the network table); the check "
        "set and every failure:"
    )
    lines.append("")
    for c in checks:
        if not (c["passed"] and "timed batch" in c.get("what", "")):
            value = fmt(c.get("max_abs_prob", c.get("value")))
            verdict = "ok" if c["passed"] else "FAILED"
            what = f"{c['name']} ({c.get('what', '')})"
            lines.append(f"- {verdict}: {what}: {value} <= {fmt(c['tolerance'])}")
    return lines
