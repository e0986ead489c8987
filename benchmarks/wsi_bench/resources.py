"""Resident memory and CPU time of whole process trees, sampled in a background thread.

The server's tree includes its Python-backend stub processes; a tree's RSS is the sum over
its live processes at one sample, and its peak the largest such sum since the last reset.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import psutil

MIB = 2**20


def tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants that are alive now."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss_mib(pid: int) -> float:
    """Summed resident memory of the tree of ``pid`` in MiB (0 when it is gone)."""
    total = 0
    for process in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += process.memory_info().rss
    return total / MIB


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of the live processes of the tree of ``pid``."""
    total = 0.0
    for process in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def wait_idle(
    pid: int, busy_s: float = 0.05, period_s: float = 0.5, timeout_s: float = 120.0
) -> float:
    """Block until the tree of ``pid`` uses under ``busy_s`` CPU seconds per ``period_s``.

    perf_analyzer exits with requests still queued in the server; waiting for them keeps one
    measurement from running into the next. Returns the seconds waited.
    """
    start = time.monotonic()
    before = tree_cpu_s(pid)
    while time.monotonic() - start < timeout_s:
        time.sleep(period_s)
        now = tree_cpu_s(pid)
        if now - before < busy_s:
            break
        before = now
    return time.monotonic() - start


@dataclass
class TreeSampler:
    """Samples the RSS of named process trees every ``interval_s`` in a daemon thread.

    Use as a context manager; :meth:`watch` adds a tree, :meth:`reset` starts a new peak,
    :meth:`peak_mib` reads it.
    """

    interval_s: float = 0.1
    _pids: dict[str, int] = field(default_factory=dict)
    _peaks: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watch(self, name: str, pid: int) -> None:
        """Sample the tree of ``pid`` under ``name`` (its peak starts at 0)."""
        with self._lock:
            self._pids[name] = pid
            self._peaks[name] = 0.0
        self._sample(name, pid)

    def unwatch(self, name: str) -> float:
        """Stop sampling ``name``; return its peak in MiB."""
        with self._lock:
            self._pids.pop(name, None)
            return self._peaks.get(name, 0.0)

    def reset(self, name: str) -> None:
        """Forget the peak of ``name`` (a new measurement window starts)."""
        with self._lock:
            self._peaks[name] = 0.0
        pid = self._pids.get(name)
        if pid is not None:
            self._sample(name, pid)

    def peak_mib(self, name: str) -> float:
        """Largest summed RSS of ``name``'s tree since it was watched or reset."""
        with self._lock:
            return self._peaks.get(name, 0.0)

    def _sample(self, name: str, pid: int) -> None:
        rss = tree_rss_mib(pid)
        with self._lock:
            if name in self._peaks:
                self._peaks[name] = max(self._peaks[name], rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                items = list(self._pids.items())
            for name, pid in items:
                self._sample(name, pid)

    def __enter__(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
