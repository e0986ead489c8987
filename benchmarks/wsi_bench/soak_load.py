"""The soak's concurrent load, one thread each, all bounded by one :class:`Clock`.

- :class:`CohortClient`: ``python -m wsi_tumor.infer`` over the slides, again and again
  until the deadline; every map must equal, bit for bit, the first map of its slide and mode
  (:class:`References`).
- :class:`PerfLoop`: the real perf_analyzer on ``tumor_classifier`` and ``tumor_detector``,
  run back to back inside given time windows, over gRPC.
- the request streams live in :mod:`wsi_bench.soak_stream`.
- :class:`RssSampler`: RSS of the server, of each Python-backend stub, of the clients,
  perf_analyzer and this process, every few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil

from wsi_bench.perf_analyzer import (
    PerfTimeoutError,
    detector_requests,
    run_perf_analyzer,
    write_input_data,
)
from wsi_bench.resources import MIB, tree, tree_rss_mib
from wsi_tumor import contract
from wsi_tumor.errors import ServerError
from wsi_tumor.serving.local_server import shm_regions

log = logging.getLogger(__name__)

STUB_NAME = "triton_python_backend_stub"


@dataclass(frozen=True)
class Clock:
    """Seconds since the soak started; the load stops starting new work at ``duration_s``."""

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

    def wait_until(self, t: float) -> bool:
        """Sleep until second ``t``; False when the soak is stopped first."""
        return not self.stop.wait(max(0.0, t - self.now()))


class References:
    """The first answer to each question (a (mode, slide) map, a stream request's output):
    every later answer to it must be identical, bit for bit."""

    def __init__(self) -> None:
        self._maps: dict[tuple[str, str], npt.NDArray[Any]] = {}
        self._lock = threading.Lock()

    def check(self, mode: str, slide: str, array: npt.NDArray[Any]) -> tuple[str, float]:
        """("reference" | "same" | "changed", max |diff|) of ``array`` against the first
        answer to (``mode``, ``slide``)."""
        with self._lock:
            reference = self._maps.setdefault((mode, slide), array)
        if reference is array:
            return "reference", 0.0
        if reference.shape != array.shape or reference.dtype != array.dtype:
            return "changed", float("inf")
        if np.array_equal(reference, array, equal_nan=True):
            return "same", 0.0
        return "changed", float(np.nanmax(np.abs(reference - array.astype(reference.dtype))))


class CohortClient(threading.Thread):
    """One cohort client: ``wsi-infer`` over ``slides`` in a loop until the deadline."""

    def __init__(
        self,
        index: int,
        mode: str,
        slides: list[Path],
        url: str,
        workdir: Path,
        clock: Clock,
        references: References,
        pids: dict[str, int],
    ) -> None:
        super().__init__(name=f"cohort-{index}", daemon=True)
        self.index, self.mode, self.slides, self.url = index, mode, slides, url
        self.out = workdir / f"client{index}"
        self.log_path = workdir / f"client{index}.log"
        self.clock, self.references, self.pids = clock, references, pids
        self.runs: list[dict[str, Any]] = []

    def run(self) -> None:
        """Run iterations while the clock allows; record each."""
        iteration = 0
        while self.clock.running():
            self.runs.append(self._iteration(iteration))
            iteration += 1

    def _iteration(self, iteration: int) -> dict[str, Any]:
        shutil.rmtree(self.out, ignore_errors=True)
        command = [
            sys.executable, "-m", "wsi_tumor.infer", *map(str, self.slides),
            "--out", str(self.out), "--url", self.url, "--quiet", "--overwrite",
            "--mode", self.mode,
        ]  # fmt: skip
        start = self.clock.now()
        with open(self.log_path, "ab") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
            self.pids[f"client{self.index}"] = process.pid
            try:
                code = self._wait(process)
            finally:
                timed_out = process.returncode is None
                if timed_out:
                    process.kill()
                    code = process.wait()
                self.pids.pop(f"client{self.index}", None)
        record: dict[str, Any] = {
            "client": self.index,
            "mode": self.mode,
            "iteration": iteration,
            "start_s": round(start, 1),
            "wall_s": round(self.clock.now() - start, 1),
            "exit_code": code,
            "timed_out": timed_out,
            "slides": [self._slide(path) for path in self.slides],
        }
        if code != 0:
            log.warning("client %d iteration %d exited with %d", self.index, iteration, code)
        return record

    def _wait(self, process: subprocess.Popen[bytes]) -> int | None:
        """The exit code, or None when the soak stops or the grace time runs out first."""
        limit = self.clock.duration_s + self.clock.grace_s
        while not self.clock.stop.is_set() and self.clock.now() < limit:
            with contextlib.suppress(subprocess.TimeoutExpired):
                return process.wait(timeout=1.0)
        return None

    def _slide(self, path: Path) -> dict[str, Any]:
        import json

        report, npy = self.out / f"{path.stem}.json", self.out / f"{path.stem}.npy"
        if not report.is_file() or not npy.is_file():
            return {"slide": path.stem, "status": "missing"}
        data = json.loads(report.read_text())
        status, diff = self.references.check(self.mode, path.stem, np.load(npy))
        if status == "changed":
            log.error("client %d: %s map changed (max |diff| %g)", self.index, path.stem, diff)
        counts = data.get("counts", {})
        return {
            "slide": path.stem,
            "status": status,
            "max_abs_diff": diff,
            "requests": int(counts.get("requests", 0)),
            "patches": int(counts.get("patches", 0)),
            "retries": int(counts.get("retries", 0)),
            "server_s": float(data.get("timings_s", {}).get("server", 0.0)),
            "peak_rss_mib": float(data.get("peak_rss_mib", 0.0)),
        }


class PerfLoop(threading.Thread):
    """perf_analyzer runs back to back inside ``windows`` (seconds of the clock), alternating
    ``tumor_classifier`` (``batch_size`` random patches) and ``tumor_detector`` (one k = 8
    region with 30 % of its cells true). A run still going 30 s after its window closes is
    killed and recorded as ``cut`` (on a slow machine its requests simply queue)."""

    def __init__(
        self,
        url: str,
        windows: list[tuple[float, float]],
        clock: Clock,
        workdir: Path,
        *,
        batch_size: int,
        request_count: int,
        concurrency: int = 2,
    ) -> None:
        super().__init__(name="perf-loop", daemon=True)
        self.url, self.windows = url, windows
        self.clock, self.workdir = clock, workdir
        self.batch_size, self.request_count = batch_size, request_count
        self.concurrency = concurrency
        self.runs: list[dict[str, Any]] = []

    def run(self) -> None:
        """Alternate the classifier and the ensemble while a window is open."""

        data = write_input_data(
            self.workdir / "soak_detector.json",
            detector_requests(None, 1, contract.REGION_CELLS, variants=2),
        )
        turn = 0
        for start, end in self.windows:
            if not self.clock.wait_until(start):
                return
            while self.clock.now() < min(end, self.clock.duration_s):
                if self.clock.stop.is_set():
                    return
                self.runs.append(self._one(turn, data))
                turn += 1

    def _one(self, turn: int, data: Path) -> dict[str, Any]:
        exact = turn % 2 == 1
        model = contract.ENSEMBLE_MODEL if exact else contract.CLASSIFIER_MODEL
        start = self.clock.now()
        end = next((b for a, b in self.windows if a <= start < b), self.clock.duration_s)
        record: dict[str, Any] = {"model": model, "start_s": round(start, 1)}
        try:
            result = run_perf_analyzer(
                model,
                self.url,
                batch_size=1 if exact else self.batch_size,
                concurrency=self.concurrency,
                request_count=self.request_count,
                input_data=data if exact else "random",
                report=self.workdir / f"perf_{turn}.csv",
                timeout_s=max(60.0, end - start + 30.0),
            )
            record |= {
                "requests": self.request_count,
                "batch_size": result.batch_size,
                "inferences_per_s": round(result.inferences_per_s, 2),
                "p50_ms": round(result.p50_ms, 1),
                "p99_ms": round(result.p99_ms, 1),
            }
        except PerfTimeoutError as exc:
            log.info("%s (its window closed)", exc)
            record["cut"] = str(exc)
        except ServerError as exc:
            log.warning("%s", exc)
            record["error"] = str(exc)
        record["wall_s"] = round(self.clock.now() - start, 1)
        return record


class RssSampler(threading.Thread):
    """Samples memory (MiB) every ``interval_s``: the server's and each stub's private memory
    (USS), the Python backend's shared-memory pool (the tmpfs pages of the regions the
    server maps), their sum (``server_tree``, each page counted once), each cohort client's
    tree RSS (by ``pids``), perf_analyzer and this process.

    Summing RSS over the server tree counts the pool twice (server and stub map the same
    region) and grows as either touches more pages of a pool whose size does not change."""

    def __init__(
        self, server_pid: int, pids: dict[str, int], clock: Clock, interval_s: float
    ) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.server_pid, self.pids, self.clock, self.interval_s = (
            server_pid,
            pids,
            clock,
            interval_s,
        )
        self.samples: list[dict[str, Any]] = []
        self.stub_pids: dict[str, list[int]] = defaultdict(list)
        self.done = threading.Event()

    def run(self) -> None:
        """Sample until :attr:`done` is set."""
        while True:
            self.samples.append(self.sample())
            if self.done.wait(self.interval_s):
                break
        self.samples.append(self.sample())

    def _stub_label(self, process: psutil.Process) -> str:
        cmdline = process.cmdline()
        model = Path(cmdline[1]).parent.parent.name if len(cmdline) > 1 else "stub"
        seen = self.stub_pids[model]
        if process.pid not in seen:
            seen.append(process.pid)
        return f"{model}#{seen.index(process.pid)}"

    def sample(self) -> dict[str, Any]:
        """One sample of every watched process."""
        stubs: dict[str, float] = {}
        server = rss_sum = 0.0
        perf = 0.0
        for process in tree(self.server_pid):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
                memory = process.memory_full_info()
                rss_sum += memory.rss / MIB
                if process.pid == self.server_pid:
                    server = memory.uss / MIB
                elif STUB_NAME in process.name() or STUB_NAME in " ".join(process.cmdline()[:1]):
                    stubs[self._stub_label(process)] = round(memory.uss / MIB, 1)
        pool = (
            sum(
                path.stat().st_blocks * 512
                for path in shm_regions(self.server_pid)
                if path.exists()
            )
            / MIB
        )
        for process in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if "perf_analyzer" in process.name():
                    perf += process.memory_info().rss / MIB
        clients = {name: round(tree_rss_mib(pid), 1) for name, pid in list(self.pids.items())}
        return {
            "t": round(self.clock.now(), 2),
            "server_tree": round(server + sum(stubs.values()) + pool, 1),
            "server": round(server, 1),
            "shm_pool": round(pool, 1),
            "server_rss_sum": round(rss_sum, 1),
            "stubs": stubs,
            "clients": clients,
            "perf_analyzer": round(perf, 1),
            "driver": round(psutil.Process().memory_info().rss / MIB, 1),
        }
