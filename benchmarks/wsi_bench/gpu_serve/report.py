"""The check's record as JSON and Markdown (rewritten after every stage, copied to $OUT)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wsi_bench.gpu_serve.runs import SLIDE_CELLS
from wsi_bench.report_files import clean, fmt, write_outputs

Json = dict[str, Any]
REPORT_JSON, REPORT_MD = "gpu_serve.json", "gpu_serve.md"
TARGETS = {"dense": 50_000.0, "exact": 5_000.0}
"""End-to-end goals on one H100/H200: cells/s dense (1M cells in 20 s), patches/s exact."""
MONAI_S = 540.0
"""The MONAI bundle's time for a 1M-cell slide (about 9 minutes)."""


def write_report(record: Json, out: Path) -> None:
    """Write gpu_serve.json and gpu_serve.md atomically (copied to ``$OUT`` when set)."""
    report = clean(record)
    write_outputs(out, {REPORT_JSON: json.dumps(report, indent=1), REPORT_MD: render(report)})


def render(report: Json) -> str:
    """The Markdown report: summary, targets, where the time goes, agreement, stages."""
    env, config = report.get("environment", {}), report.get("config", {})
    lines = [
        "# GPU serve check (benchmarks/gpu_serve.py)",
        "",
        f"{env.get('device_name')} | {env.get('cpu_count')} CPU cores | torch {env.get('torch')} "
        f"| Python {env.get('python')} | plan `{config.get('plan')}` | set-up "
        f"`{report.get('setup', {}).get('kind')}` | {fmt(report.get('elapsed_s'))} s of a "
        f"{fmt(config.get('budget_s'))} s budget | "
        f"**{'PASS' if report.get('passed') else 'FAIL'}**",
        "",
        f"{report.get('date')}: `python benchmarks/gpu_serve.py "
        f"{' '.join(config.get('argv') or [])}`",
        "",
        "tritonserver 2.51 (Python backend, runtime `python-torch`, "
        f"{'FP16 channels-last on KIND_GPU' if config.get('device') == 'cuda' else 'FP32 on CPU'}"
        f" instances) answering `wsi-infer` over gRPC on loopback; model: {report.get('model')}.",
        "",
        "## End to end",
        "",
        "| run | cells | cells/s (stream) | cells/s (slide) | target | met | 1M cells, s "
        f"| vs MONAI {MONAI_S:.0f} s | GPU busy | client peak MiB | server peak MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, run in report.get("runs", {}).items():
        mode = "exact" if "exact" in name else "dense"
        rate = run.get("cells_per_s_slide")
        busy = run.get("gpu_busy_share", run.get("gpu_busy_share_from_compute"))
        projected = run.get("projected_1m_s")
        cells, stream = fmt(run.get("cells")), fmt(run.get("cells_per_s_stream"))
        met, projection = (fmt(rate >= TARGETS[mode]) if rate else "-"), fmt(projected)
        if run.get("cut"):  # how far it got before its deadline, how fast: the slide missed it
            partial = run.get("partial_cells_per_s")
            cells = f"{fmt(run.get('partial_cells'))} (cut)"
            stream, met = f"{fmt(partial)} (cut)", "no (cut)"
            projected = SLIDE_CELLS / partial if partial else None
            projection = f"{fmt(projected)} (stream only)" if projected else "-"
        lines.append(
            f"| {name} | {cells} | {stream} | "
            f"{fmt(rate)} | {fmt(TARGETS[mode])} | {met} | {projection} | "
            f"{fmt(MONAI_S / projected) + 'x' if projected else '-'} | {fmt(busy)} | "
            f"{fmt((run.get('client') or {}).get('peak_rss_mib'))} | "
            f"{fmt(run.get('server_peak_rss_mib'))} |"
        )
    lines += ["", "Cells/s (stream): the client's streaming phase; (slide): the whole slide, "
              "tissue mask and outputs included, which the target is held to; the projection "
              "streams 1M cells at the measured rate and adds a 1M-cell slide's mask and outputs "
              "and the process start-up. GPU busy: nvidia-smi's mean utilisation (else the "
              "networks' compute seconds over the stream). A run cut at its deadline (cut) "
              "missed its target on the slide; it gives the cells answered, their rate from the "
              "first to the last answer and 1M cells at that rate, streaming only."]  # fmt: skip
    lines += _time(report.get("runs", {}))
    lines += _agreement(report.get("agreement", {}))
    lines += ["", "## Stages", "", "| stage | status | s | note |", "| --- | --- | --- | --- |"]
    for name, stage in report.get("stages", {}).items():
        note = str(stage.get("note") or "").replace("|", "/")[:300]
        lines.append(f"| {name} | {stage['status']} | {fmt(stage.get('seconds'))} | {note} |")
    setup = {k: v for k, v in report.get("setup", {}).items() if k != "kind"}
    if setup:
        lines += ["", "Set-up: " + ", ".join(f"{k} {v}" for k, v in setup.items())]
    return "\n".join(lines) + "\n"


def _time(runs: Json) -> list[str]:
    lines = [
        "",
        "## Where the time goes",
        "",
        "| run | read+decode s (thread sum) | serialise s | stream s | mask s | outputs s | "
        "request ms client / server | queue s | compute in / infer / out s | MB sent |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, run in runs.items():
        client = run.get("client") or {}
        latency = run.get("request_latency_ms") or {}
        models = run.get("server_models") or {}
        queue = sum(m.get("queue_s", 0.0) for m in models.values())
        compute = [sum(m.get(f"compute_{k}_s", 0.0) for m in models.values())
                   for k in ("input", "infer", "output")]  # fmt: skip
        sent = client.get("bytes_sent")
        lines.append(
            f"| {name} | {fmt(client.get('read_decode_s_threads'))} | "
            f"{fmt(client.get('serialise_s_threads'))} | {fmt(client.get('stream_s'))} | "
            f"{fmt(client.get('mask_s'))} | {fmt(client.get('outputs_s'))} | "
            f"{fmt(latency.get('client'))} / {fmt(latency.get('server'))} | {fmt(queue)} | "
            f"{' / '.join(fmt(c) for c in compute)} | {fmt(sent / 1e6 if sent else None)} |"
        )
    lines += ["", "Server seconds are summed over the models a run used (the ensemble counts "
              "its steps too) from Triton's statistics over the run; the difference of the "
              "request latencies is transport plus the client's own queueing."]  # fmt: skip
    for name, run in runs.items():
        for model, stats in (run.get("server_models") or {}).items():
            lines.append(
                f"- {name} / {model}: {stats['requests']} requests, {stats['executions']} "
                f"executions, {stats['inferences']} inferences; queue {fmt(stats['queue_s'])} s,"
                f" infer {fmt(stats['compute_infer_s'])} s"
            )
    return lines


def _agreement(agreement: Json) -> list[str]:
    if not agreement:
        return []
    lines = ["", "## Maps against a CPU FP32 run of the same checkpoint (agreement slide)", ""]
    for mode, a in agreement.items():
        lines.append(
            f"- {mode}: {fmt(a.get('cells'))} cells, max |dp| {fmt(a.get('max_abs_prob'))} "
            f"(tolerance {fmt(a.get('tolerance'))}), mean {fmt(a.get('mean_abs_prob'))}, "
            f"Pearson {fmt(a.get('pearson'), 6)}, same tissue cells "
            f"{fmt(a.get('same_tissue_cells'))}: {'ok' if a.get('passed') else 'FAILED'}"
        )
    return lines
