"""Run the real ``perf_analyzer`` against the served models and parse its CSV report.

``tumor_classifier`` is driven with batched FP32 patches; ``tumor_detector`` (no batching)
and ``tumor_detector_dense`` (batching regions) with uint8 regions and a cell mask of a
typical tissue fraction, passed as perf_analyzer ``--input-data`` JSON (base64 tensors).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.errors import ServerError
from wsi_tumor.serving.local_server import find_executable

log = logging.getLogger(__name__)

TYPICAL_TISSUE_FRACTION = 0.3
"""Share of a region's mask cells that are tissue, used for the detector's load."""


class PerfTimeoutError(ServerError):
    """perf_analyzer was still running at its time limit and was killed."""


@dataclass(frozen=True)
class PerfResult:
    """One perf_analyzer measurement.

    Attributes:
        model: Model name.
        batch_size: ``-b`` (1 for the non-batching ensemble).
        concurrency: Requests in flight.
        inferences_per_s: perf_analyzer's throughput (requests/s x batch size).
        patches_per_s: Patches classified per second.
        p50_ms: Median client latency of a request.
        p99_ms: 99th percentile client latency.
        precision: What the served model computes in (its repository's ``precision``).
    """

    model: str
    batch_size: int
    concurrency: int
    inferences_per_s: float
    patches_per_s: float
    p50_ms: float
    p99_ms: float
    precision: str = "fp32"


def find_perf_analyzer() -> Path:
    """The perf_analyzer launcher ($PERF_ANALYZER, PATH, this venv's bin); ServerError if none."""
    return find_executable("perf_analyzer", "PERF_ANALYZER")


def _b64(array: npt.NDArray[np.generic]) -> dict[str, object]:
    data = np.ascontiguousarray(array)
    return {"b64": base64.b64encode(data.tobytes()).decode("ascii"), "shape": list(data.shape)}


def detector_requests(
    image: npt.NDArray[np.uint8] | None,
    regions: int,
    cells: int = contract.REGION_CELLS,
    tissue_fraction: float = TYPICAL_TISSUE_FRACTION,
    variants: int = 4,
    seed: int = 0,
    batched: bool = False,
) -> list[dict[str, dict[str, object]]]:
    """``variants`` detector requests of ``regions`` regions each, as perf_analyzer JSON.

    Regions are random crops of ``image`` (uint8 H x W x 3, e.g. a real H&E image; random
    pixels when None); each mask has ``round(tissue_fraction * cells**2)`` true cells (>= 1).
    ``batched``: for a model with a batch axis (the dense model), each entry is one region
    without the batch axis (perf_analyzer's ``-b`` stacks them); ``regions`` must be 1.
    """
    rng = np.random.default_rng(seed)
    size = contract.region_size(cells)
    true_cells = max(1, round(tissue_fraction * cells * cells))
    out = []
    for _ in range(variants):
        if image is None or image.shape[0] < size or image.shape[1] < size:
            batch = rng.integers(0, 256, (regions, size, size, contract.CHANNELS), np.uint8)
        else:
            ys = rng.integers(0, image.shape[0] - size + 1, regions)
            xs = rng.integers(0, image.shape[1] - size + 1, regions)
            batch = np.stack(
                [image[y : y + size, x : x + size, :3] for y, x in zip(ys, xs, strict=True)]
            )
        mask = np.zeros((regions, cells * cells), bool)
        for row in mask:
            row[rng.choice(cells * cells, true_cells, replace=False)] = True
        pixels, masks = batch.astype(np.uint8), mask.reshape(regions, cells, cells)
        if batched:
            pixels, masks = pixels[0], masks[0]
        out.append(
            {
                contract.REGIONS_TENSOR: _b64(pixels),
                contract.CELL_MASK_TENSOR: _b64(masks),
            }
        )
    return out


def write_input_data(path: Path, requests: Sequence[dict[str, dict[str, object]]]) -> Path:
    """Write perf_analyzer's ``--input-data`` JSON file (its folder made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": list(requests)}), encoding="utf-8")
    return path


def parse_csv(text: str) -> list[dict[str, float]]:
    """Rows of perf_analyzer's ``-f`` CSV report as {column: value}; latencies in usec."""
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        values = {}
        for key, value in row.items():
            try:
                values[key.strip()] = float(value)
            except (TypeError, ValueError):
                continue
        if values:
            rows.append(values)
    return rows


def run_perf_analyzer(
    model: str,
    url: str,
    *,
    batch_size: int = 1,
    concurrency: int = 1,
    patches_per_inference: float = 1.0,
    input_data: Path | str = "random",
    shapes: Sequence[str] = (),
    report: Path,
    measurement_ms: int = 3000,
    max_trials: int = 5,
    stability_percent: int = 20,
    request_count: int | None = None,
    window_requests: int | None = None,
    timeout_s: float = 600.0,
) -> PerfResult:
    """Measure one (batch size, concurrency) point of ``model`` over gRPC.

    Args:
        model: Model name on the server at ``url`` (host:grpc_port).
        batch_size: ``-b``; must be 1 for max_batch_size 0 models.
        concurrency: Requests kept in flight.
        patches_per_inference: Patches one inference stands for (1 for the classifier;
            the true mask cells per request for the detector).
        input_data: "random", "zero" or a JSON file from :func:`write_input_data`.
        shapes: ``--shape name:d1,d2`` values for inputs with variable dims.
        report: Where perf_analyzer writes its CSV.
        measurement_ms: Length of one measurement window.
        max_trials: Windows before perf_analyzer gives up on stability.
        stability_percent: Allowed spread between windows.
        request_count: Send exactly this many requests and report them, with no stability
            search (fast and deterministic in length; for smoke tests on busy machines).
        window_requests: Use ``count_windows`` mode: each window holds at least this many
            requests (and lasts at least ``measurement_ms``); steadier than time windows when
            one request takes seconds.
        timeout_s: Wall-clock limit of the run.

    Raises:
        PerfTimeoutError: when it runs past ``timeout_s`` (killed).
        ServerError: when perf_analyzer fails or reports nothing.
    """
    command = [
        str(find_perf_analyzer()), "-m", model, "-u", url, "-i", "grpc",
        "-b", str(batch_size), "--concurrency-range", f"{concurrency}:{concurrency}",
        "--input-data", str(input_data), "-f", str(report),
    ]  # fmt: skip
    if request_count is not None:
        command += ["--request-count", str(request_count)]
    else:
        command += ["-p", str(measurement_ms), "-r", str(max_trials), "-s", str(stability_percent)]
        if window_requests is not None:
            command += [
                "--measurement-mode", "count_windows",
                "--measurement-request-count", str(window_requests),
            ]  # fmt: skip
    for shape in shapes:
        command += ["--shape", shape]
    log.info("running %s", " ".join(command))
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise PerfTimeoutError(f"perf_analyzer on {model} ran past {timeout_s:.0f} s") from exc
    if done.returncode != 0 or not report.is_file():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise ServerError(f"perf_analyzer on {model} failed ({done.returncode}):\n{tail}")
    rows = parse_csv(report.read_text())
    if not rows:
        raise ServerError(f"{report}: perf_analyzer wrote no measurement")
    row = rows[-1]
    throughput = row["Inferences/Second"]
    return PerfResult(
        model=model,
        batch_size=batch_size,
        concurrency=concurrency,
        inferences_per_s=throughput,
        patches_per_s=throughput * patches_per_inference,
        p50_ms=row["p50 latency"] / 1000.0,
        p99_ms=row["p99 latency"] / 1000.0,
    )


def wire_bytes_per_patch(
    cells: int = contract.REGION_CELLS, tissue_fraction: float = 1.0
) -> dict[str, float]:
    """Tensor payload bytes per classified patch for the three ways of sending patches.

    Returns:
        {"region_uint8": region + mask bytes / patches per region at ``tissue_fraction``,
        "patch_float32": one normalised FP32 patch, "patch_uint8": one uint8 patch}.
    """
    size = contract.region_size(cells)
    region = size * size * contract.CHANNELS + cells * cells  # uint8 pixels + bool mask
    patch = contract.PATCH_SIZE * contract.PATCH_SIZE * contract.CHANNELS
    return {
        "region_uint8": region / max(1.0, tissue_fraction * cells * cells),
        "patch_float32": float(patch * 4),
        "patch_uint8": float(patch),
    }
