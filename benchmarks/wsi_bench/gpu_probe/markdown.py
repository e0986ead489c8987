"""The Markdown report of a run, from its cleaned JSON report (numpy-free, torch-free)."""

from __future__ import annotations

from typing import Any

from wsi_bench.gpu_probe.config import GOAL_SECONDS, MONAI_SECONDS, TARGET_LOGIT_STD, Json


def fmt(value: Any, digits: int = 3) -> str:
    """A report value as table text: "-" for None, yes/no, ``digits`` significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:,.0f}"
        return f"{value:.2e}"
    return str(value)


def render_markdown(report: Json) -> str:
    """The Markdown report (summary, projection, decode, network, checks, stages)."""
    lines = _summary(report)
    lines += _projection(report.get("projection") or {})
    lines += _decode(report.get("decode") or {}, report.get("slide") or {})
    lines += _network(report.get("network", []), report.get("agreement") or {})
    lines += _checks(report.get("checks", []))
    lines += _tiler_and_pipeline(report)
    lines += ["", "## Stages", "", "| stage | status | s | note |", "| --- | --- | --- | --- |"]
    for name, s in report.get("stages", {}).items():
        lines.append(
            f"| {name} | {s['status']} | {fmt(s.get('seconds'))} | "
            f"{(s.get('note') or '').replace('|', '/')[:200]} |"
        )
    return "\n".join(lines) + "\n"


def _summary(report: Json) -> list[str]:
    env = report["environment"]
    return [
        "# GPU probe report",
        "",
        f"{env.get('device_name')} | torch {env.get('torch')} | torchvision "
        f"{env.get('torchvision')} | numpy {env.get('numpy')} | Python {env.get('python')} | "
        f"{env.get('cpu_count')} CPU cores | plan `{report['config']['plan']}` | "
        f"{fmt(report['elapsed_s'])} s of a {fmt(report['config']['budget_s'])} s budget | "
        f"checks: **{'PASS' if report['passed'] else 'FAIL'}**",
        "",
        f"Model: {report['model'].get('source')}"
        + (
            f" (1x1 head along the features' first principal axis, logit std {TARGET_LOGIT_STD}"
            "; dense vs exact figures of random weights say nothing about trained ones)"
            if report["model"].get("calibration")
            else ""
        ),
        "",
        "## Projected end to end, 1M tissue cells (4.1 Gpx at level 0, each decoded once)",
        "",
    ]


def _projection(proj: Json) -> list[str]:
    if not proj.get("rows"):
        return ["No projection: a decode or network stage produced no passing number."]
    lines = [
        "| network | decoder | decode s | network s | overlapped s | serial s | vs MONAI "
        f"{MONAI_SECONDS:.0f} s | <= {GOAL_SECONDS:.0f} s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in proj["rows"]:
        lines.append(
            f"| {r['mode']} | {r['decoder']} | {fmt(r['decode_s'])} | {fmt(r['network_s'])}"
            f" | {fmt(r['overlapped_s'])} | {fmt(r['serial_s'])} | {fmt(r['vs_monai'])}x"
            f" | {fmt(r['meets_goal'])} |"
        )
    lines += [
        "",
        "Decode seconds if every cell's 224 px patch were read (MONAI, 12.25x): "
        + ", ".join(f"{d} {fmt(s)}" for d, s in proj["decode_s_monai_reads"].items()),
    ]
    if "decode_s_region_reads" in proj:
        lines.append(
            f"Decode seconds with per-region reads of the best dense k "
            f"({fmt(proj['dense_region_read_factor'])}x): "
            + ", ".join(f"{d} {fmt(s)}" for d, s in proj["decode_s_region_reads"].items())
        )
    if proj.get("measured_pipeline_s"):
        lines += [
            "",
            f"Measured end to end on the device (decode thread + dense network, see "
            f"Pipeline): {fmt(proj['measured_pipeline_s'])} s per 1M cells.",
        ]
    return [
        *lines,
        "",
        "Not counted: disk reads, tissue mask, Triton transport, map assembly. On "
        "A100/H100-class GPUs torchvision decodes baseline JPEG on nvJPEG's hardware "
        "engines, not the SMs, so decode and network can overlap; serial is the bound.",
    ]


def _decode(dec: Json, slide: Json) -> list[str]:
    lines = ["", "## Tile decode (raw tile bytes + JPEGTables merge -> RGB pixels)", ""]
    if "cpu" in dec:
        c = dec["cpu"]
        lines.append(
            f"CPU (torchvision/libjpeg-turbo): {fmt(c['one_thread_mp_s'])} MP/s on one "
            f"thread, {fmt(c['all_threads_mp_s'])} MP/s on {c['threads']} threads."
        )
    for b in (dec.get("device") or {}).get("batches", []):
        lines.append(f"- {dec['device']['type']} decode, batch {b['batch']}: {fmt(b['mp_s'])} MP/s")
    if slide:
        lines += [
            "",
            f"Slide: {slide.get('path')} ({'written' if slide.get('written') else 'read'}"
            f"), {slide.get('tiles')} tiles of {slide.get('tile')} px, "
            f"{fmt(slide.get('bits_per_pixel'))} bits/px, JPEGTables: "
            f"{fmt(slide.get('jpeg_tables'))}.",
        ]
    return lines


def _network(rows: list[Json], agree: Json) -> list[str]:
    lines = [
        "",
        "## Network (cells per second; every row checked against the float32 output)",
        "",
        "| mode | variant | k | regions | cells/call | cells/s | first call s | "
        "max abs dp | tol | ok |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        check = r.get("check")
        dp = check.get("max_abs_prob") if isinstance(check, dict) else None
        tol = check.get("tolerance") if isinstance(check, dict) else None
        note = r.get("error") or ""
        lines.append(
            f"| {r['mode']} | {r['variant']} | {r['cells']} | {r['regions']} | "
            f"{r['cells_per_call']} | {fmt(r.get('cells_per_s'))} | {fmt(r.get('first_call_s'))}"
            f" | {fmt(dp)} | {fmt(tol)} | {fmt(r.get('passed'))}{' ' + note if note else ''} |"
        )
    if agree:
        lines += [
            "",
            "## Dense vs exact (same regions; they differ by design at patch borders)",
            "",
        ]
        for name, a in agree.items():
            lines.append(
                f"- {name}: {a['cells']} cells, max |dp| {fmt(a['max_abs_prob'])}, mean |dp| "
                f"{fmt(a['mean_abs_prob'])}, Pearson p {fmt(a['pearson_prob'])}, "
                f"logits {fmt(a['pearson_logit'])}"
            )
    return lines


def _checks(checks: list[Json]) -> list[str]:
    passed = sum(bool(c["passed"]) for c in checks)
    lines = [
        "",
        "## Correctness checks",
        "",
        f"{passed} of {len(checks)} passed (timed batches: "
        "see the network table); the check set and every failure:",
        "",
    ]
    for c in checks:
        if c["passed"] and "timed batch" in c.get("what", ""):
            continue
        value = c.get("max_abs_prob", c.get("value"))
        lines.append(
            f"- {'ok' if c['passed'] else 'FAILED'}: {c['name']} ({c.get('what', '')}):"
            f" {fmt(value)} <= {fmt(c['tolerance'])}"
        )
    return lines


def _tiler_and_pipeline(report: Json) -> list[str]:
    lines: list[str] = []
    if report.get("tiler"):
        t = report["tiler"]
        lines += [
            "",
            f"Python tiler (exact path, one process): {fmt(t['patches_per_s_one_process'])}"
            f" patches/s, {t['bytes_per_patch']} B FP32 per patch, "
            f"{fmt(t['output_mb_s'])} MB/s out.",
        ]
    if report.get("pipeline"):
        p = report["pipeline"]
        lines += [
            "",
            f"Pipeline on the device (decode all {report['slide'].get('tiles')} tiles, assemble, "
            f"dense {p['variant']} k={p['cells']} on {p['regions']} regions): "
            f"{fmt(p['serial_cells_per_s'])} cells/s serial, "
            f"{fmt(p['overlapped_cells_per_s'])} cells/s with decode on its own thread "
            f"({fmt(p['decoded_px_per_cell'])} decoded px per cell: the block's edges are "
            "decoded but not classified).",
        ]
    return lines
