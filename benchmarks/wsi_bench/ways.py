"""The end-to-end ways through one slide, each its own measured process.

(a) the MONAI in-process PyTorch baseline (:mod:`wsi_bench.baseline`);
(b) ``wsi-infer --mode exact`` through the ``tumor_detector`` ensemble (uint8 regions);
(c) the client cutting FP32 patches itself for ``tumor_classifier``
    (:mod:`wsi_bench.patch_client`);
(d) ``wsi-infer --mode dense``: whole regions through ``tumor_detector_dense``;
(e), (f) the ways (b) and (d) on the INT8 repository (:mod:`wsi_bench.int8`).

Client CPU seconds come from ``getrusage(RUSAGE_CHILDREN)`` around the child, the client's
peak RSS from its own ``ru_maxrss`` (and the sampler), the server's peak RSS and CPU seconds
from its whole process tree (stubs included), and the per-model queue / compute times from
Triton's statistics API (difference over the run).
"""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_bench import BenchError, child_env
from wsi_bench.resources import TreeSampler, tree_cpu_s
from wsi_tumor.serving.local_server import LocalTritonServer

log = logging.getLogger(__name__)

STAT_KEYS = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class WayResult:
    """One way's measurements.

    Attributes:
        key: ``a`` to ``f``.
        label: What ran.
        process_s: Wall seconds of the whole process (imports, mask, outputs included).
        infer_s: Wall seconds of the patch phase (reading + classification).
        patches: Patches classified.
        client_cpu_s: CPU seconds of the client (or baseline) process.
        client_peak_rss_mib: Its peak resident memory.
        server_peak_rss_mib: Peak summed RSS of the server tree during the run (None: a).
        server_cpu_s: CPU seconds of the server tree during the run.
        bytes_sent: Tensor payload bytes sent to the server.
        stages_s: Client-side stage timings (summed over threads where they overlap).
        server_stats: Per model: requests, executions and queue/compute milliseconds.
        map_path: The probability map (.npy).
        precision: What the network computed in (the slide JSON's ``model.precision``).
    """

    key: str
    label: str
    process_s: float
    infer_s: float
    patches: int
    client_cpu_s: float
    client_peak_rss_mib: float
    server_peak_rss_mib: float | None = None
    server_cpu_s: float | None = None
    bytes_sent: int | None = None
    requests: int | None = None
    stages_s: dict[str, float] = field(default_factory=dict)
    server_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    map_path: str = ""
    precision: str | None = None

    @property
    def patches_per_s(self) -> float:
        """Patches per second of the patch phase."""
        return self.patches / self.infer_s if self.infer_s else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready values, with the derived throughput."""
        data = asdict(self)
        data["patches_per_s"] = round(self.patches_per_s, 2)
        return data


def run_measured(
    command: list[str], log_path: Path, sampler: TreeSampler, name: str
) -> tuple[float, float, float]:
    """Run ``command`` to completion; return (wall s, CPU s, sampled peak RSS MiB).

    Raises:
        BenchError: on a non-zero exit, quoting the end of its log.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log_path, "wb") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=child_env()
        )
        sampler.watch(name, process.pid)
        code = process.wait()
    wall = time.perf_counter() - start
    peak = sampler.unwatch(name)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise BenchError(f"{' '.join(command[:4])} ... exited with {code}:\n{tail}")
    return wall, cpu, peak


def model_statistics(
    url: str, headers: dict[str, str] | None = None
) -> dict[str, dict[str, float]]:
    """Cumulative per-model counts and nanoseconds from Triton's statistics API.

    ``headers`` unlock the API where it is restricted (``LocalTritonServer.admin_headers``).
    """
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        raw = client.get_inference_statistics(as_json=True)
    finally:
        client.close()
    out: dict[str, dict[str, float]] = {}
    for model in raw.get("model_stats", []):
        stats = model.get("inference_stats", {})
        row = {
            "requests": float(stats.get("success", {}).get("count", 0)),
            "executions": float(model.get("execution_count", 0)),
            "inferences": float(model.get("inference_count", 0)),
        }
        for key in STAT_KEYS:
            row[f"{key}_ns"] = float(stats.get(key, {}).get("ns", 0))
        out[str(model["name"])] = row
    return out


def statistics_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Per model over one run: requests, executions, and queue/compute in ms (totals)."""
    delta: dict[str, dict[str, float]] = {}
    for name, row in after.items():
        base = before.get(name, {})
        diff = {key: value - base.get(key, 0.0) for key, value in row.items()}
        if diff["requests"] <= 0:
            continue
        entry = {
            "requests": diff["requests"],
            "executions": diff["executions"],
            "inferences": diff["inferences"],
        }
        for key in STAT_KEYS:
            entry[f"{key}_ms"] = round(diff[f"{key}_ns"] / 1e6, 1)
        delta[name] = entry
    return delta


def run_baseline_way(
    slide: Path,
    checkpoint: Path,
    workdir: Path,
    sampler: TreeSampler,
    *,
    batch_size: int,
    workers: int,
    threads: int,
) -> WayResult:
    """Way (a): the MONAI baseline in its own process."""
    map_path, report_path = workdir / "a_map.npy", workdir / "a.json"
    command = [
        sys.executable, "-m", "wsi_bench.baseline", str(slide), str(checkpoint),
        str(map_path), str(report_path), "--batch-size", str(batch_size),
        "--workers", str(workers), "--threads", str(threads),
    ]  # fmt: skip
    wall, cpu, peak = run_measured(command, workdir / "a.log", sampler, "client")
    report = json.loads(report_path.read_text())
    return WayResult(
        key="a",
        label=(
            f"MONAI MaskedPatchWSIDataset + DataLoader (batch {batch_size}, {workers} "
            f"worker(s)), TorchVisionFCModel in PyTorch eager ({threads} threads)"
        ),
        process_s=round(wall, 3),
        infer_s=float(report["infer_s"]),
        patches=int(report["patches"]),
        client_cpu_s=round(cpu, 2),
        client_peak_rss_mib=max(float(report["peak_rss_mib"]), round(peak, 1)),
        stages_s={
            "setup (mask, locations, model)": float(report["setup_s"]),
            "network (compute)": float(report["compute_s"]),
            "waiting for patches": float(report["read_wait_s"]),
        },
        map_path=str(map_path),
        precision="fp32",
    )


CLIENT_WAYS = {
    "b": ("wsi_tumor.infer", ["--mode", "exact"], "uint8 regions -> tumor_detector ensemble"),
    "c": ("wsi_bench.patch_client", [], "client-cut FP32 patches -> tumor_classifier"),
    "d": ("wsi_tumor.infer", ["--mode", "dense"], "uint8 regions -> tumor_detector_dense"),
    "e": ("wsi_tumor.infer", ["--mode", "exact"], "uint8 regions -> tumor_detector, INT8"),
    "f": ("wsi_tumor.infer", ["--mode", "dense"], "uint8 regions -> tumor_detector_dense, INT8"),
}
"""Key -> (module run as ``python -m``, extra flags, what goes on the wire)."""


def run_client_ways(
    keys: str,
    slide: Path,
    server: LocalTritonServer,
    workdir: Path,
    sampler: TreeSampler,
    args: Any,
) -> list[WayResult]:
    """The client ways ``keys`` one after another, each on an idle server; dense ways send
    ``args.dense_inflight`` requests at a time, the others ``args.inflight``."""
    from wsi_bench.resources import wait_idle

    results = []
    for key in keys:
        wait_idle(server.pid or 0)
        log.info("way (%s): %s", key, CLIENT_WAYS[key][2])
        dense = "dense" in CLIENT_WAYS[key][1]
        inflight = args.dense_inflight if dense else args.inflight
        results.append(
            run_client_way(
                key, slide, server, workdir, sampler, readers=args.readers, inflight=inflight
            )
        )
    sampler.unwatch("server")
    return results


def run_client_way(
    key: str,
    slide: Path,
    server: LocalTritonServer,
    workdir: Path,
    sampler: TreeSampler,
    *,
    readers: int,
    inflight: int,
) -> WayResult:
    """Way (b) to (f) (see :data:`CLIENT_WAYS`): the client with ``--url``."""
    module, flags, what = CLIENT_WAYS[key]
    url, server_pid = server.grpc_url, server.pid or 0
    out = workdir / f"{key}_out"
    command = [
        sys.executable, "-m", module, str(slide), "--out", str(out), "--url", url,
        "--quiet", "--overwrite", "--readers", str(readers), "--inflight", str(inflight), *flags,
    ]  # fmt: skip
    stats_before = model_statistics(url)
    sampler.reset("server")
    server_cpu_before = tree_cpu_s(server_pid)
    wall, cpu, peak = run_measured(command, workdir / f"{key}.log", sampler, "client")
    server_cpu = tree_cpu_s(server_pid) - server_cpu_before
    server_peak = sampler.peak_mib("server")
    stats = statistics_delta(stats_before, model_statistics(url))
    report = json.loads((out / f"{slide.stem}.json").read_text())
    timings = report["timings_s"]
    config = report["config"]
    return WayResult(
        key=key,
        label=(
            f"{' '.join(['python -m', module, *flags])}: {what} (k={config['region_cells']}, "
            f"{report['counts']['regions_per_request']} regions/request, {readers} readers, "
            f"{inflight} in flight)"
        ),
        process_s=round(wall, 3),
        infer_s=float(timings["stream"]),
        patches=int(report["counts"]["patches"]),
        client_cpu_s=round(cpu, 2),
        client_peak_rss_mib=max(float(report["peak_rss_mib"]), round(peak, 1)),
        server_peak_rss_mib=round(server_peak, 1),
        server_cpu_s=round(server_cpu, 2),
        bytes_sent=int(report["bytes_sent"]),
        requests=int(report["counts"]["requests"]),
        stages_s={
            "mask": float(timings["mask"]),
            "read (reader threads, summed)": float(timings["read"]),
            "serialise (reader threads, summed)": float(timings.get("serialise", 0.0)),
            "on the wire + server (summed over requests)": float(timings["server"]),
            "stream (wall)": float(timings["stream"]),
            "outputs": float(timings["outputs"]),
        },
        server_stats=stats,
        map_path=str(out / f"{slide.stem}.npy"),
        precision=report.get("model", {}).get("precision"),
    )


def load_map(way: WayResult) -> npt.NDArray[np.float32]:
    """The way's probability map."""
    return np.asarray(np.load(way.map_path), dtype=np.float32)
