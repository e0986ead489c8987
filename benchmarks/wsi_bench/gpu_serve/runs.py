"""The client side: ``wsi-infer`` against the server as a child process (its peak memory from
``wait4``), where a slide's time goes, and the map agreement with a CPU run of the same
checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_bench.gpu_serve.environment import Setup
from wsi_tumor import contract

Json = dict[str, Any]
INFER_CODE = """\
import functools, sys, time
from wsi_tumor.client import runner
from wsi_tumor.infer import main
start, done, log = time.monotonic(), 0, open(sys.argv[1], "w", buffering=1)
def progress(cells):
    global done
    done += cells
    log.write(f"{time.monotonic() - start:.3f} {done}\\n")
runner.run = functools.partial(runner.run, progress=progress)
sys.exit(main(sys.argv[2:]))
"""
"""``wsi-infer`` itself (its ``main``, imported when called, picks up ``runner.run``) with the
client's progress callback logging ``seconds cells`` per answered request to the file named
first: a run cut at its deadline still tells how far and how fast it got."""
SLIDE_CELLS = 1_000_000
"""Tissue cells of the projected slide (about a CAMELYON16 slide's at level 6)."""


def run_client(
    setup: Setup, slide: Path, out: Path, url: str, mode: str, options: list[str], deadline: float
) -> Json:
    """``wsi-infer`` on one slide in ``mode``; stopped (SIGTERM, then SIGKILL) at ``deadline``.

    Returns:
        Exit status, wall seconds, the child's peak RSS, whether it was cut, its stderr's
        last lines and the slide's report (None when it did not finish).
    """
    argv = [str(slide), "--out", str(out), "--url", url, "--mode", mode, "--quiet", *options]
    log_path, progress_path = out.with_suffix(".log"), out.with_suffix(".progress")
    shutil.rmtree(out, ignore_errors=True)  # no report of an earlier run in a reused --work
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        child = subprocess.Popen(
            [str(setup.python), "-c", INFER_CODE, str(progress_path), *argv],
            env=setup.client_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    cut, status, usage = False, None, None
    while status is None:
        pid, code, rusage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            status, usage = os.waitstatus_to_exitcode(code), rusage
        elif time.monotonic() > deadline:  # SIGTERM at the deadline, SIGKILL 10 s later
            child.send_signal(signal.SIGKILL if cut else signal.SIGTERM)
            cut, deadline = True, time.monotonic() + 10
        else:
            time.sleep(0.05)
    child.returncode = status  # reaped by wait4
    report_path = out / f"{slide.stem}.json"
    result: Json = {
        "mode": mode,
        "exit": status,
        "cut": cut,
        "wall_s": time.perf_counter() - start,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1) if usage else None,
        "log_tail": log_path.read_text(errors="replace").splitlines()[-5:],
        "report": json.loads(report_path.read_text()) if report_path.is_file() else None,
        "progress": read_progress(progress_path),
    }
    return result


def read_progress(path: Path) -> Json | None:
    """Cells answered by the last logged request and the rate between the first and the last
    answer (None before any answer; a last line the kill left unfinished is ignored)."""
    lines = path.read_text().split("\n")[:-1] if path.is_file() else []  # whole lines only
    points = []
    for line in lines:
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit():
            points.append((float(fields[0]), int(fields[1])))
    if not points:
        return None
    (first_s, first), (last_s, cells) = points[0], points[-1]
    rate = (cells - first) / (last_s - first_s) if last_s > first_s else None
    return {"cells": cells, "answers": len(points), "first_answer_s": first_s,
            "last_answer_s": last_s, "cells_per_s": rate}  # fmt: skip


def breakdown(run: Json, server: dict[str, Json], sampled: Json) -> Json:
    """Cells/s end to end and where the time went, from the client's report and the server's
    statistics over the same run."""
    report = run["report"] or {}
    timings = report.get("timings_s", {})
    counts = report.get("counts", {})
    cells = int(counts.get("patches", 0))
    requests = max(int(counts.get("requests", 0)), 1)
    stream_s = float(timings.get("stream", 0.0)) or float("nan")
    top = server.get(contract.ENSEMBLE_MODEL if run["mode"] == "exact" else contract.DENSE_MODEL)
    networks = [server[m] for m in (contract.CLASSIFIER_MODEL, contract.DENSE_MODEL) if m in server]
    per_request_client = float(timings.get("server", 0.0)) / requests
    per_request_server = (top or {}).get("success_s", 0.0) / requests
    result: Json = {
        "cells": cells,
        "tissue_cells": counts.get("tissue_cells"),
        "requests": counts.get("requests"),
        "cells_per_s_stream": cells / stream_s,
        "cells_per_s_slide": cells / float(timings.get("total", stream_s)),
        "cells_per_s_process": cells / run["wall_s"],
        "client": {
            "read_decode_s_threads": timings.get("read"),
            "serialise_s_threads": timings.get("serialise"),
            "in_flight_s_summed": timings.get("server"),
            "mask_s": timings.get("mask"),
            "stream_s": timings.get("stream"),
            "outputs_s": timings.get("outputs"),
            "slide_total_s": timings.get("total"),
            "process_wall_s": run["wall_s"],
            "bytes_sent": report.get("bytes_sent"),
            "peak_rss_mib": run["peak_rss_mib"],
        },
        "server_models": server,
        "request_latency_ms": {
            "client": 1e3 * per_request_client,
            "server": 1e3 * per_request_server,
            "transport_and_client_queue": 1e3 * (per_request_client - per_request_server),
        },
        "network_compute_s": sum(m["compute_infer_s"] for m in networks),
        "progress": run.get("progress"),
        **sampled,
    }
    if "gpu_busy_share" not in sampled and stream_s == stream_s:
        result["gpu_busy_share_from_compute"] = result["network_compute_s"] / stream_s
    fixed = (run["wall_s"] - stream_s) if cells else 0.0
    per_cell = (float(timings.get("mask", 0)) + float(timings.get("outputs", 0))) / max(cells, 1)
    result["projected_1m_s"] = (
        SLIDE_CELLS / result["cells_per_s_stream"] + (fixed - per_cell * cells) + per_cell * 1e6
        if cells
        else None
    )
    return result


def reference_maps(slide_path: Path, checkpoint: Path) -> dict[str, npt.NDArray[np.float32]]:
    """Both modes' maps computed here on the CPU in FP32 with plain PyTorch: the client's own
    mask and region plans, the exact mode's patches cut by the served tiler's numpy code."""
    from wsi_tumor.client.grid import place_grid, plan_dense_regions, plan_regions
    from wsi_tumor.export.parity import torch_dense, torch_probabilities
    from wsi_tumor.models.checkpoint import load_model
    from wsi_tumor.serving.tiling import assemble_grid, tile_regions
    from wsi_tumor.slide import open_slide, tissue_mask

    model = load_model(checkpoint)
    with open_slide(slide_path) as slide:
        mask = tissue_mask(slide, contract.MASK_LEVEL)
        maps = {mode: np.zeros(mask.shape, np.float32) for mode in contract.MODES}
        for region in plan_regions(mask, contract.REGION_CELLS):
            pixels = slide.read_region(region.origin, region.size, 0)[None]
            cells = region.cell_mask[None]
            probabilities = torch_probabilities(model, tile_regions(pixels, cells, cells.size))
            place_grid(maps["exact"], region, assemble_grid(probabilities, cells)[0])
        for region in plan_dense_regions(mask, contract.DENSE_REGION_CELLS):
            pixels = slide.read_region(region.origin, region.size, 0)[None]
            grid = torch_dense(model, pixels, region.cell_mask[None])[0]
            place_grid(maps["dense"], region, grid)
    return maps


def agreement(
    served: npt.NDArray[np.float32], reference: npt.NDArray[np.float32], tolerance: float
) -> Json:
    """Max/mean |probability difference| and Pearson of a served map against the CPU one."""
    if served.shape != reference.shape:
        return {"shape": list(served.shape), "expected": list(reference.shape), "passed": False}
    diff = np.abs(served.astype(np.float64) - reference)
    tissue = reference > 0
    same_cells = bool(((served > 0) == tissue).all())
    pearson = (
        float(np.corrcoef(served[tissue], reference[tissue])[0, 1]) if tissue.sum() > 1 else None
    )
    return {
        "cells": int(tissue.sum()),
        "max_abs_prob": float(diff.max()),
        "mean_abs_prob": float(diff[tissue].mean()) if tissue.any() else 0.0,
        "pearson": pearson,
        "same_tissue_cells": same_cells,
        "tolerance": tolerance,
        "passed": bool(same_cells and diff.max() <= tolerance),
    }
