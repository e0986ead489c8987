"""The server side of the check: export the repository, start tritonserver, read its
statistics, and sample memory and GPU use while a client runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from wsi_bench.gpu_serve.environment import Setup
from wsi_tumor.errors import ServerError
from wsi_tumor.serving.local_server import LOOPBACK, LocalTritonServer

Json = dict[str, Any]
EXPORT_CODE = "import sys\nfrom wsi_tumor.export.cli import main\nsys.exit(main(sys.argv[1:]))"


def export(setup: Setup, checkpoint: Path, repository: Path, gpu: bool, timeout_s: float) -> Json:
    """``wsi-export --runtime python-torch`` in the client's environment; its summary.

    Raises:
        ServerError: when the export fails or runs past ``timeout_s``.
    """
    argv = ["--checkpoint", str(checkpoint), "--repository", str(repository),
            "--runtime", "python-torch", "--instance-kind", "gpu" if gpu else "cpu",
            "--parity-patches", "8"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(
        [str(setup.python), "-c", EXPORT_CODE, *argv],
        env=setup.client_env,
        capture_output=True,
        text=True,
        timeout=max(timeout_s, 1.0),
    )
    if done.returncode != 0:
        raise ServerError(f"wsi-export failed: {done.stderr.strip()[-600:]}")
    summary: Json = {"seconds": time.perf_counter() - start}
    for line in done.stderr.splitlines():
        if "export done: " in line:
            summary.update(json.loads(line.split("export done: ", 1)[1]))
    return summary


def start_server(setup: Setup, repository: Path, log_path: Path, timeout_s: float) -> Any:
    """tritonserver on ``repository``, ready (or ServerError quoting its log)."""
    server = LocalTritonServer(
        repository,
        ready_timeout_s=max(timeout_s, 5.0),
        extra_args=setup.server_args,
        log_path=log_path,
        metrics=True,
        binary=setup.tritonserver,
        environment=setup.server_env,
    )
    return server.start()


def model_stats(server: Any) -> dict[str, Json]:
    """Triton's per-model statistics (``/v2/models/stats``) by model name."""
    url = f"http://{server.http_url}/v2/models/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        data = json.loads(response.read())
    return {m["name"]: m for m in data.get("model_stats", [])}


def pending_requests(server: Any) -> int:
    """Requests Triton holds that no model instance has taken yet (its pending-request gauge)."""
    url = f"http://{LOOPBACK}:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    gauge = "nv_inference_pending_request_count{"
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in lines if line.startswith(gauge))


def wait_idle(server: Any, timeout_s: float, settle_s: float, poll_s: float = 0.5) -> Json:
    """Wait until no request is pending and no model finished one for ``settle_s`` (longer than
    an execution takes): the requests of a client killed mid-run are done. Whether the server
    went idle, and the seconds waited."""
    start = time.monotonic()
    last, quiet_since = None, start
    while (now := time.monotonic()) - start < timeout_s:
        done = {name: _count(stats, "success") for name, stats in model_stats(server).items()}
        if done != last or pending_requests(server):
            last, quiet_since = done, now
        elif now - quiet_since >= settle_s:
            return {"idle": True, "waited_s": now - start}
        time.sleep(poll_s)
    return {"idle": False, "waited_s": time.monotonic() - start}


def _seconds(stats: Json, key: str) -> float:
    return float(stats.get("inference_stats", {}).get(key, {}).get("ns", 0)) / 1e9


def _count(stats: Json, key: str) -> int:
    return int(stats.get("inference_stats", {}).get(key, {}).get("count", 0))


def stats_delta(before: dict[str, Json], after: dict[str, Json]) -> dict[str, Json]:
    """What each model did between two statistics snapshots (models that did something)."""
    out = {}
    for name, now in after.items():
        then = before.get(name, {})
        requests = _count(now, "success") - _count(then, "success")
        if requests <= 0:
            continue
        row: Json = {
            "requests": requests,
            "executions": int(now.get("execution_count", 0)) - int(then.get("execution_count", 0)),
            "inferences": int(now.get("inference_count", 0)) - int(then.get("inference_count", 0)),
        }
        for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            row[f"{key}_s"] = _seconds(now, key) - _seconds(then, key)
        out[name] = row
    return out


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(parent, []).append(int(entry))
    return tree


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (a server and its stubs), MiB."""
    tree, todo, total = _children(), [pid], 0
    while todo:
        current = todo.pop()
        todo += tree.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class Sampler:
    """While open: the server tree's peak RSS and, with nvidia-smi, GPU busy and memory.

    Args:
        server_pid: The tritonserver's process id.
        period_s: Seconds between samples.
    """

    def __init__(self, server_pid: int, period_s: float = 0.25) -> None:
        self.server_pid = server_pid
        self.period_s = period_s
        self.peak_rss_mib = 0.0
        self.gpu_busy: list[float] = []
        self.gpu_memory_mib: list[float] = []
        self._stop = threading.Event()
        self._smi: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Sampler:
        smi = shutil.which("nvidia-smi")
        if smi:
            self._smi = subprocess.Popen(
                [smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-i", "0", "-lms", str(int(self.period_s * 1000))],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            self._threads.append(threading.Thread(target=self._read_smi, daemon=True))
        self._threads.append(threading.Thread(target=self._sample_rss, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def _sample_rss(self) -> None:
        while not self._stop.wait(self.period_s):
            self.peak_rss_mib = max(self.peak_rss_mib, tree_rss_mib(self.server_pid))

    def _read_smi(self) -> None:
        assert self._smi is not None and self._smi.stdout is not None
        for line in self._smi.stdout:
            fields = [f.strip() for f in line.split(",")]
            if len(fields) == 2 and all(f.replace(".", "").isdigit() for f in fields):
                self.gpu_busy.append(float(fields[0]) / 100)
                self.gpu_memory_mib.append(float(fields[1]))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._smi is not None:
            self._smi.terminate()
            self._smi.wait(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)

    def summary(self) -> Json:
        """Peak server RSS; GPU busy share (mean of nvidia-smi's samples) and peak memory."""
        out: Json = {"server_peak_rss_mib": round(self.peak_rss_mib, 1)}
        if self.gpu_busy:
            out["gpu_busy_share"] = sum(self.gpu_busy) / len(self.gpu_busy)
            out["gpu_peak_memory_mib"] = max(self.gpu_memory_mib)
            out["gpu_samples"] = len(self.gpu_busy)
        return out
