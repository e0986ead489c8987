"""The soak's threads, all bounded by one :class:`Clock`: :class:`CohortClient` (``wsi-infer``
in a loop), :class:`PerfLoop` (perf_analyzer in windows), :class:`RequestStream` (the soak's
own requests; every good answer must equal the first to the same question, bit for bit) and
:class:`MemorySampler` (the server tree's memory: per process the private pages of its heap,
i.e. anonymous mappings, and of mapped files; the Python backend's pool once)."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from wsi_bench import perf_analyzer as pa
from wsi_bench.resources import MIB, tree, tree_rss_mib
from wsi_bench.soak.requests import CLASSIFIER, DENSE, ENSEMBLE, Arrays, SoakRequest, region_bytes
from wsi_tumor import contract
from wsi_tumor.errors import ServerError
from wsi_tumor.serving.local_server import shm_regions

log = logging.getLogger(__name__)
_lock = threading.Lock()


@dataclass(frozen=True)
class Clock:
    """Seconds since the load started; no new work starts after ``duration_s``."""

    t0: float
    duration_s: float
    grace_s: float
    stop: threading.Event = field(default_factory=threading.Event)

    def now(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.t0

    def running(self) -> bool:
        """Whether new work may still start."""
        return not self.stop.is_set() and self.now() < self.duration_s


def compare(first: dict[Any, Arrays], key: Any, array: Arrays) -> str:
    """``reference`` (``array`` is the first answer to ``key``), ``same`` or ``changed``."""
    with _lock:
        reference = first.setdefault(key, array)
    if reference is array:
        return "reference"
    same = reference.shape == array.shape and reference.dtype == array.dtype
    return "same" if same and np.array_equal(reference, array, equal_nan=True) else "changed"


class CohortClient(threading.Thread):
    """One cohort client: ``wsi-infer`` over ``slides`` in a loop until the deadline; a run
    still going ``grace_s`` after it is killed (its missing maps are cut, not lost)."""

    def __init__(self, index: int, mode: str, slides: list[Path], url: str, workdir: Path,
                 clock: Clock, first: dict[Any, Arrays], pids: dict[str, int]) -> None:  # fmt: skip
        super().__init__(name=f"cohort-{index}", daemon=True)
        self.label, self.mode, self.slides, self.url = f"client{index}", mode, slides, url
        self.out, self.clock, self.first, self.pids = workdir / self.label, clock, first, pids
        self.runs: list[dict[str, Any]] = []

    def run(self) -> None:
        """Run ``wsi-infer`` while the clock allows; record each run."""
        while self.clock.running():
            shutil.rmtree(self.out, ignore_errors=True)
            command = [sys.executable, "-m", "wsi_tumor.infer", *map(str, self.slides), "--out",
                       str(self.out), "--url", self.url, "--quiet", "--overwrite", "--mode",
                       self.mode]  # fmt: skip
            with open(self.out.with_suffix(".log"), "ab") as handle:
                process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
                self.pids[self.label] = process.pid
                code = None
                while not self.clock.stop.is_set() and code is None:
                    if self.clock.now() > self.clock.duration_s + self.clock.grace_s:
                        break
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        code = process.wait(timeout=1.0)
                if code is None:  # the soak stopped or the grace ran out
                    process.kill()
                    process.wait()
                self.pids.pop(self.label, None)
            self.runs.append({"exit_code": code, "slides": [self._slide(p) for p in self.slides]})

    def _slide(self, path: Path) -> dict[str, Any]:
        report, npy = self.out / f"{path.stem}.json", self.out / f"{path.stem}.npy"
        if not report.is_file() or not npy.is_file():
            return {"status": "missing"}
        status = compare(self.first, (self.mode, path.stem), np.load(npy))
        if status == "changed":
            log.error("%s: the map of %s changed", self.label, path.stem)
        counts = json.loads(report.read_text()).get("counts", {})
        per_request = int(counts.get("regions_per_request") or 1)
        size = [min(int(n), per_request) * region_bytes(int(k))
                for k, n in counts.get("regions_by_cells", {}).items()]  # fmt: skip
        return {"status": status, "requests": counts.get("requests", 0), "largest": max([0, *size])}


class PerfLoop(threading.Thread):
    """perf_analyzer back to back inside ``windows`` (seconds), alternating the classifier
    (``batch`` random patches) and the ensemble (one k = 8 region); a run still going 30 s
    after its window closes is killed and recorded as cut."""

    def __init__(self, url: str, windows: list[tuple[float, float]], clock: Clock,
                 workdir: Path, batch: int, count: int) -> None:  # fmt: skip
        super().__init__(name="perf-loop", daemon=True)
        self.url, self.windows, self.clock, self.workdir = url, windows, clock, workdir
        self.batch, self.count = batch, count
        self.runs: list[dict[str, Any]] = []

    def run(self) -> None:
        """Alternate the two models while a window is open."""
        regions = pa.detector_requests(None, 1, contract.REGION_CELLS, variants=2)
        data = pa.write_input_data(self.workdir / "soak_detector.json", regions)
        for start, end in self.windows:
            if self.clock.stop.wait(max(0.0, start - self.clock.now())):
                return
            while self.clock.running() and self.clock.now() < end:
                exact = len(self.runs) % 2 == 1
                run: dict[str, Any] = {"model": ENSEMBLE if exact else CLASSIFIER}
                try:
                    result = pa.run_perf_analyzer(
                        run["model"], self.url, batch_size=1 if exact else self.batch,
                        concurrency=2, request_count=self.count,
                        input_data=data if exact else "random",
                        report=self.workdir / f"perf_{len(self.runs)}.csv",
                        timeout_s=max(60.0, end - self.clock.now() + 30.0),
                    )  # fmt: skip
                    run.update(requests=self.count, p50_ms=result.p50_ms, p99_ms=result.p99_ms)
                except pa.PerfTimeoutError as exc:
                    run["cut"] = str(exc)
                except ServerError as exc:
                    log.warning("%s", exc)
                    run["error"] = str(exc)
                self.runs.append(run)


def send(client: Any, request: SoakRequest, timeout_s: float) -> tuple[str, float, Any]:
    """Send ``request`` with a ``tritonclient.grpc`` client: (``OK`` or the gRPC status
    name, seconds, the output of a good answer or the error message)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for t in request.inputs:
        inputs.append(
            grpcclient.InferInput(t.name, [*t.array.shape], np_to_triton_dtype(t.array.dtype))
        )
        inputs[-1].set_data_from_numpy(t.array)
        inputs[-1].set_shape([*(t.shape or t.array.shape)])
    start = time.perf_counter()
    try:
        result = client.infer(request.model, inputs, request.version, client_timeout=timeout_s)
    except Exception as exc:
        status = getattr(exc, "status", lambda: None)()
        name = str(status or "").removeprefix("StatusCode.") or f"client:{type(exc).__name__}"
        return name, time.perf_counter() - start, str(exc)[:300]
    name = contract.PROBABILITIES_TENSOR if request.model == CLASSIFIER else contract.GRID_TENSOR
    output = result.as_numpy(name) if request.good else None
    return "OK", time.perf_counter() - start, output


class RequestStream(threading.Thread):
    """Sends ``requests`` one after the other, ``pause_s`` apart, until the clock stops, and
    tallies answers per kind and status, good answers' seconds, answers compared and changed,
    the first message per (kind, model, status) and the largest payload per model and status."""

    def __init__(self, name: str, url: str, requests: Iterator[SoakRequest], clock: Clock,
                 pause_s: float, timeout_s: float) -> None:  # fmt: skip
        super().__init__(name=name, daemon=True)
        self.url, self.requests, self.clock = url, requests, clock
        self.pause_s, self.timeout_s = pause_s, timeout_s
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.latencies: list[float] = []
        self.compared = self.changed = 0
        self.examples: dict[str, str] = {}
        self.largest: dict[str, int] = {}
        self._first: dict[Any, Arrays] = {}

    def run(self) -> None:
        """Send until the clock stops the load."""
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        try:
            for request in self.requests:
                if not self.clock.running():
                    break
                left = self.clock.duration_s + self.clock.grace_s - self.clock.now()
                self.record(request, *send(client, request, max(1.0, min(self.timeout_s, left))))
                self.clock.stop.wait(self.pause_s)
        finally:
            client.close()

    def record(self, request: SoakRequest, status: str, seconds: float, answer: Any) -> None:
        """Tally one answer; compare a good one with its kind's first answer."""
        self.counts[request.kind][status] += 1
        model = request.model if request.model in (ENSEMBLE, DENSE, CLASSIFIER) else "unknown"
        key = f"{model} {status}"
        self.largest[key] = max(self.largest.get(key, 0), request.nbytes)
        if isinstance(answer, str):
            self.examples.setdefault(f"{request.kind} -> {key}", answer)
        elif request.good and status == "OK":
            self.latencies.append(seconds)
            verdict = compare(self._first, request.kind, answer)
            self.compared += verdict != "reference"
            self.changed += verdict == "changed"
            if verdict == "changed":
                log.error("stream: %s answered differently from its reference", request.kind)


STUB_NAME = "triton_python_backend_stub"


def private_mib(pid: int) -> dict[str, float]:
    """Private resident MiB of ``pid``: ``heap`` (anonymous) and ``files`` (file-backed, but
    for ``/dev/shm``: the pool)."""
    kib, kind = {"heap": 0, "files": 0, "pool": 0}, "heap"
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            if line[0] in "0123456789abcdef":  # a mapping's header; its fields are Capitalised
                path = (line.split(None, 5)[5:] or [""])[0]
                kind = "files" if path[:1] == "/" else "heap"
                kind = "pool" if path.startswith("/dev/shm/") else kind
            elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                kib[kind] += int(line.split()[1])
    return {"heap": round(kib["heap"] / 1024, 1), "files": round(kib["files"] / 1024, 1)}


class MemorySampler(threading.Thread):
    """Samples the server's tree every ``interval_s`` until :attr:`done` is set, and once more:
    ``t``; ``tree`` (every process's heap and files, plus the pool once); ``pool`` (resident
    MiB), ``regions`` and ``region_mib`` (their count and largest size); ``procs`` (``server``,
    ``<model>#<n>`` per stub: :func:`private_mib`); ``clients`` (each one's tree RSS)."""

    def __init__(self, server_pid: int, pids: dict[str, int], clock: Clock, interval_s: float):
        super().__init__(name="memory-sampler", daemon=True)
        self.server_pid, self.pids, self.clock, self.interval = server_pid, pids, clock, interval_s
        self.samples: list[dict[str, Any]] = []
        self.stub_pids: dict[str, list[int]] = defaultdict(list)
        self.done = threading.Event()

    def run(self) -> None:
        """Sample until :attr:`done` is set, and once more."""
        while not self.done.is_set():
            self.samples.append(self.sample())
            self.done.wait(self.interval)
        self.samples.append(self.sample())

    def sample(self) -> dict[str, Any]:
        """One sample (see the class)."""
        procs: dict[str, dict[str, float]] = {}
        for process in tree(self.server_pid):
            with contextlib.suppress(psutil.Error, OSError, IndexError):
                if process.pid == self.server_pid:
                    procs["server"] = private_mib(process.pid)
                elif STUB_NAME in (cmdline := process.cmdline())[0]:
                    model = Path(cmdline[1]).parent.parent.name
                    pids = self.stub_pids[model]
                    pids += [] if process.pid in pids else [process.pid]
                    procs[f"{model}#{pids.index(process.pid)}"] = private_mib(process.pid)
        stats = [p.stat() for p in shm_regions(self.server_pid) if p.exists()]
        pool = sum(s.st_blocks * 512 for s in stats) / MIB
        return {
            "t": round(self.clock.now(), 2),
            "tree": round(sum(v["heap"] + v["files"] for v in procs.values()) + pool, 1),
            "pool": round(pool, 1),
            "regions": len(stats),
            "region_mib": round(max((s.st_size for s in stats), default=0) / MIB, 1),
            "procs": procs,
            "clients": {name: round(tree_rss_mib(pid), 1) for name, pid in list(self.pids.items())},
        }
