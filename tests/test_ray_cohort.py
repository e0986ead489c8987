"""A cohort on a local two-node Ray cluster; one node is killed mid-cohort (issue 15).

The fast tests at the top need no Ray. The cluster test: two Ray nodes run on this machine,
each started by its own ``ray start --block`` in its own session: the head (1 CPU, resource
``node_a``; the driver attaches to it) and a worker (1 CPU, resource ``node_b``). Slide tasks
take one CPU, so the two nodes work on a slide each. While the worker node computes its
second slide (its first one if it gets no second), every process of its session is killed
(SIGKILL: raylet, agents and the task's worker, as a machine that dies). Ray retries that
slide on the head node; the cohort must end complete with maps identical to the
single-process client's, every slide's ``<stem>.json`` written once and no temporary file
left. A re-submitted cohort then computes only the slide whose marker is missing, through a
Triton server that an actor runs on the node left (``--ray-servers per-node``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest

from wsi_tumor.client.config import InferConfig
from wsi_tumor.client.outputs import SlideOutputs
from wsi_tumor.client.runner import SUMMARY_NAME, SlideOutcome, run_slides
from wsi_tumor.cluster.progress import CohortSnapshot, PatchReporter, ProgressLedger
from wsi_tumor.cluster.ray_cohort import RaySlideOutcome, run_on_ray
from wsi_tumor.errors import ConfigError

START_TIMEOUT_S = 180.0
"""Bound on starting the two Ray nodes on a slow, loaded machine."""
SLIDES = 4
WIDTH, HEIGHT = 2048, 1536
"""About 200 patches a slide: several progress snapshots fall inside node b's slides even on a
fast runner (at 1024 x 768, 60 patches, a fast CI runner finished node b's second slide
between two snapshots and nothing was killed)."""
RAY_BIN = Path(sys.executable).parent / "ray"
# Ray notices a dead node after missing heartbeats; these settings make that ~10 s instead of
# the production default's ~30 s without risking a live node of a loaded machine.
SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 10}


# --- without Ray ------------------------------------------------------------------------------
def test_missing_ray_is_a_config_error_naming_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    config = InferConfig(slides=(tmp_path,), out=tmp_path / "out")
    with pytest.raises(ConfigError, match=r"pip install 'wsi-tumor\[ray\]'"):
        run_on_ray(config, "auto")


class _Recorder:
    """Stands in for an actor handle: ``handle.method.remote(*args)`` calls the ledger."""

    def __init__(self, ledger: ProgressLedger) -> None:
        self.ledger = ledger

    def __getattr__(self, name: str) -> object:
        method = getattr(self.ledger, name)
        return type("Method", (), {"remote": staticmethod(method)})()


def test_ledger_numbers_attempts_and_sums_patches_per_node() -> None:
    ledger = ProgressLedger(slides_total=2)
    first = PatchReporter(_Recorder(ledger), "/s/a.tif", "node-b")
    first(10)
    first.close()
    retry = PatchReporter(_Recorder(ledger), "/s/a.tif", "node-a")  # node b died
    first(5)  # a late count of the dead attempt: counted for node b, not for the retry
    first.close()
    retry(7)
    retry.close()
    other = PatchReporter(_Recorder(ledger), "/s/b.tif", "node-a")
    other(3)
    other.close()
    ledger.finish("/s/b.tif")
    snapshot = ledger.snapshot()
    assert ledger.attempts("/s/a.tif") == 2 and ledger.attempts("/s/b.tif") == 1
    assert snapshot.attempts == {"/s/a.tif": 2, "/s/b.tif": 1}
    assert set(snapshot.running) == {"/s/a.tif"}  # b is finished
    running = snapshot.running["/s/a.tif"]
    assert (running.node, running.attempt, running.patches) == ("node-a", 2, 7)
    assert snapshot.patches_by_node == {"node-b": 15, "node-a": 10}
    assert snapshot.slides_done == 1 and snapshot.patches == 25
    timed = CohortSnapshot(10.0, 2, 1, {"node-a": 30, "node-b": 20})
    assert timed.patches_per_s == pytest.approx(5.0)
    assert timed.node_rates() == {"node-a": pytest.approx(3.0), "node-b": pytest.approx(2.0)}
    assert timed.describe() == "5.0 patches/s (2 nodes: node-a 3.0, node-b 2.0)"


def test_summary_line_names_the_node_and_attempt() -> None:
    plain = SlideOutcome(Path("/s/a.tif"), "skipped")
    ran = RaySlideOutcome(
        Path("/s/b.tif"),
        "complete",
        report={"counts": {"patches": 4}, "patches_per_s": 2.0},
        node_id="f" * 56,
        node_ip="10.0.0.2",
        attempt=2,
        task_s=1.5,
    )
    assert "ray" not in plain.to_json()
    line = ran.to_json()
    assert line["counts"] == {"patches": 4} and line["status"] == "complete"
    assert line["ray"] == {
        "node_id": "f" * 56,
        "node_ip": "10.0.0.2",
        "attempt": 2,
        "task_s": 1.5,
        "earlier_attempt": False,
    }


def test_a_retry_of_a_finished_slide_returns_the_report_of_the_earlier_attempt(
    monkeypatch, tmp_path
) -> None:
    """The node died after the slide's marker was written: the retry computes nothing."""
    import types

    from wsi_tumor.cluster.task import run_slide_task

    fake_ray = types.SimpleNamespace(
        get_runtime_context=lambda: types.SimpleNamespace(get_node_id=lambda: "a" * 56),
        util=types.SimpleNamespace(get_node_ip_address=lambda: "10.0.0.3"),
    )
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    slide = tmp_path / "slide.tif"
    slide.write_bytes(b"not read: the outputs are complete")
    out = tmp_path / "out"
    outputs = SlideOutputs(out, "slide")
    out.mkdir()
    for path in outputs.all_paths()[:-1]:
        path.write_bytes(b"x")
    report = {"counts": {"patches": 7}, "patches_per_s": 3.5, "checksums": outputs.checksums()}
    outputs.report.write_text(json.dumps(report))
    assert outputs.complete()
    # no server: a slide that needed computing would fail at once
    config = InferConfig(
        slides=(slide,), out=out, urls=("127.0.0.1:1",), retry_timeout=0.0, quiet=True
    )
    result = run_slide_task(config, slide, {}, ledger=None)
    assert (result.status, result.earlier_attempt) == ("complete", True)
    assert result.report["counts"] == {"patches": 7} and result.node_id == "a" * 56
    assert result.to_json()["ray"]["earlier_attempt"] is True


# --- on a two-node Ray cluster --------------------------------------------------------------


def tissue_image(width: int, height: int, seed: int) -> np.ndarray:
    """Glass with an elliptic H&E-like tissue whose size and place depend on ``seed``."""
    from test_client import paint_tissue

    rng = np.random.default_rng(seed)
    image = rng.normal(236, 3, (height, width, 3))
    yy, xx = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.4, 0.6) * height, rng.uniform(0.4, 0.6) * width
    tissue = ((yy - cy) / (0.3 * height)) ** 2 + ((xx - cx) / (0.3 * width)) ** 2 < 1
    paint_tissue(image, tissue, rng)
    return np.clip(image, 0, 255).astype(np.uint8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def session_processes(sid: int) -> list[psutil.Process]:
    """Every process of session ``sid`` (a ``ray start --block`` and all it started)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(process.pid) == sid:
                found.append(process)
    return found


def kill_session(sid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    for _ in range(3):  # a second pass catches what was being forked during the first
        for process in session_processes(sid):
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)
        time.sleep(0.2)


class LocalRayCluster:
    """A Ray head and one worker node on this machine, each in its own session.

    Token authentication is off for this throwaway cluster: Ray 2.60 otherwise uses the
    token in ``~/.ray/auth_token``, shared with every Ray on the machine, and this process
    caches the token it finds when ``ray`` is imported. :meth:`connect` sets the mode in this
    process's environment and :meth:`stop` restores the environment.
    """

    def __init__(self) -> None:
        # short: Ray's unix sockets live under it (108-byte limit)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="wsiray", dir="/tmp"))
        self.address = f"127.0.0.1:{free_port()}"
        self.env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self._saved_env: dict[str, str | None] = {}
        self.head: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        command = [
            str(RAY_BIN),
            "start",
            "--block",
            "--num-cpus=1",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            "--object-store-memory=80000000",
            f"--dashboard-agent-listen-port={free_port()}",
            "--include-log-monitor=false",
            *args,
        ]
        env = {**os.environ, **self.env}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        with open(self.temp_dir / f"{name}.log", "wb") as log_file:
            return subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def start(self) -> LocalRayCluster:
        port = self.address.rsplit(":", 1)[1]
        self.head = self._start(
            "head",
            "--head",
            f"--port={port}",
            '--resources={"node_a": 1}',
            "--include-dashboard=false",
            f"--ray-client-server-port={free_port()}",
            f"--system-config={json.dumps(SYSTEM_CONFIG)}",
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._port_open(int(port)):
            self._check_alive(self.head, "head", deadline)
            time.sleep(0.2)
        self.worker = self._start(
            "worker", f"--address={self.address}", '--resources={"node_b": 1}'
        )
        return self

    @staticmethod
    def _port_open(port: int) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def _check_alive(self, process: subprocess.Popen[bytes], name: str, deadline: float) -> None:
        if process.poll() is not None:
            raise RuntimeError(f"ray {name} exited:\n{self.log(name)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"ray {name} not up in {START_TIMEOUT_S:.0f} s:\n{self.log(name)}")

    def log(self, name: str) -> str:
        path = self.temp_dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def connect(self) -> dict[str, str]:
        """Connect this process (the driver) to the head; return resource -> node id."""
        import ray

        deadline = time.monotonic() + START_TIMEOUT_S
        for name, value in self.env.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
        nodes: dict[str, str] = {}
        while len(nodes) < 2:
            assert self.head is not None and self.worker is not None
            self._check_alive(self.head, "head", deadline)
            self._check_alive(self.worker, "worker", deadline)
            nodes = {
                name: node["NodeID"]
                for node in ray.nodes()
                if node["Alive"]
                for name in ("node_a", "node_b")
                if name in node["Resources"]
            }
            time.sleep(0.5)
        return nodes

    def kill_worker(self) -> None:
        """Kill the worker node as a dying machine would: every process, SIGKILL."""
        assert self.worker is not None
        kill_session(self.worker.pid)
        self.worker.wait(timeout=30)

    def stop(self) -> None:
        """End both sessions (TERM, 3 s later KILL), remove the temp dir; never raises."""
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        sessions = [p.pid for p in (self.head, self.worker) if p is not None]
        for sid in sessions:
            kill_session(sid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(session_processes(s) for s in sessions):
            time.sleep(0.5)
        for sid in sessions:
            kill_session(sid)
        for process in (self.head, self.worker):
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class ReportWatcher:
    """Record, every 20 ms, the inode of each ``<stem>.json`` and any temporary file seen.

    Outputs are renamed into place, so a report written twice shows two inodes.
    """

    def __init__(self, out: Path, stems: list[str]) -> None:
        self.out, self.stems = out, stems
        self.inodes: dict[str, set[int]] = {stem: set() for stem in stems}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for stem in self.stems:
                with contextlib.suppress(OSError):
                    self.inodes[stem].add((self.out / f"{stem}.json").stat().st_ino)
            time.sleep(0.02)

    def __enter__(self) -> ReportWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._run_once()

    def _run_once(self) -> None:
        for stem in self.stems:
            with contextlib.suppress(OSError):
                self.inodes[stem].add((self.out / f"{stem}.json").stat().st_ino)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalRayCluster]:
    """Two Ray nodes, starting: the test's other fixtures (export, server) run meanwhile."""
    pytest.importorskip("ray")
    if not RAY_BIN.is_file():
        pytest.skip(f"no ray launcher at {RAY_BIN}")
    cluster = LocalRayCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_client import write_slide

    root = tmp_path_factory.mktemp("ray_slides")
    for index in range(SLIDES):
        write_slide(root / f"slide_{index}.tif", tissue_image(WIDTH, HEIGHT, seed=10 + index))
    return root


def read_summary(out: Path) -> dict[str, dict]:
    data = json.loads((out / SUMMARY_NAME).read_text())
    return {Path(line["slide"]).stem: line for line in data["slides"]}


def tritonservers_on(repository: Path) -> set[int]:
    """Pids of the tritonserver processes serving ``repository``."""
    found = set()
    for process in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(process.info["cmdline"] or ())
            if "tritonserver" in (process.info["name"] or "") and str(repository) in cmdline:
                found.add(process.pid)
    return found


@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cohort_survives_a_dead_node(
    ray_cluster, slide_dir, triton_server_factory, exported_repository, tmp_path
) -> None:
    import ray

    cluster = ray_cluster  # booting in the background; the reference runs meanwhile
    server = triton_server_factory(exported_repository.repository)
    out = tmp_path / "cohort"
    # small regions, one per request: progress arrives many times per slide
    config = InferConfig(
        slides=(slide_dir,),
        out=out,
        urls=(server.grpc_url,),
        readers=1,
        inflight=2,
        region_cells=4,
        regions_per_request=1,
        quiet=True,
    )
    stems = [f"slide_{index}" for index in range(SLIDES)]
    reference_out = tmp_path / "reference"
    reference = run_slides(replace(config, out=reference_out), sorted(slide_dir.glob("*.tif")))
    assert [r.status for r in reference] == ["complete"] * SLIDES

    nodes = cluster.connect()
    assert ray.get_runtime_context().get_node_id() == nodes["node_a"], "driver not on the head"
    killed: dict[str, str] = {}  # the slide
    times: dict[str, float] = {}  # kill, retry (monotonic)
    seen_on_b: list[str] = []
    trace: list[str] = []  # what each snapshot showed, for the failure message

    def kill_node_b_mid_slide(snapshot: CohortSnapshot) -> None:
        """Kill node b mid-slide: its second slide, or its first if it gets no second."""
        running = ", ".join(
            f"{Path(s).stem}@{'b' if r.node == nodes['node_b'] else 'a'}:{r.patches}"
            for s, r in snapshot.running.items()
        )
        trace.append(f"{time.monotonic() - started:.2f}s done={snapshot.slides_done} [{running}]")
        if killed:
            retry = snapshot.running.get(killed["slide"])
            if retry is not None and retry.attempt > 1:
                times.setdefault("retry", time.monotonic())
            return
        for slide, running in snapshot.running.items():
            if running.node != nodes["node_b"]:
                continue
            if slide not in seen_on_b:
                seen_on_b.append(slide)
            second = len(seen_on_b) >= 2 and slide == seen_on_b[-1]
            no_second = len(seen_on_b) == 1 and snapshot.slides_done >= SLIDES - 2
            unfinished = not SlideOutputs(out, Path(slide).stem).report.exists()
            if (second or no_second) and running.patches > 0 and unfinished:
                killed["slide"] = slide
                times["kill"] = time.monotonic()
                cluster.kill_worker()
                return

    started = time.monotonic()
    with ReportWatcher(out, stems) as watcher:
        cohort = run_on_ray(config, cluster.address, progress=kill_node_b_mid_slide)
    cohort_s = time.monotonic() - started

    assert killed, "node b was never seen mid-slide: nothing was killed\n" + "\n".join(trace)
    killed_stem = Path(killed["slide"]).stem
    assert [r.status for r in cohort.slides] == ["complete"] * SLIDES, cohort.slides
    assert cohort.exit_code == 0
    summary = read_summary(out)
    assert set(summary) == set(stems)
    by_node = {stem: line["ray"]["node_id"] for stem, line in summary.items()}
    # the killed slide was finished by node a in a second attempt; what b finished stayed
    assert by_node[killed_stem] == nodes["node_a"]
    assert summary[killed_stem]["ray"]["attempt"] == 2
    for slide in seen_on_b[:-1]:
        line = summary[Path(slide).stem]
        assert line["ray"]["node_id"] == nodes["node_b"] and line["ray"]["attempt"] == 1
    for stem in stems:
        assert len(watcher.inodes[stem]) == 1, f"{stem}.json written {len(watcher.inodes[stem])}x"
    assert not list(out.glob(".*.tmp")), "a partial output was left behind"
    # the maps equal the single-process client's
    for stem in stems:
        got, expected = SlideOutputs(out, stem), SlideOutputs(reference_out, stem)
        assert got.complete()
        np.testing.assert_array_equal(np.load(got.prob_map), np.load(expected.prob_map))
        assert got.csv.read_text() == expected.csv.read_text()

    # re-submitted, the cohort computes only the unfinished slide: here through a Triton
    # server that an actor runs on the node left (--ray-servers per-node, no --url)
    SlideOutputs(out, stems[0]).report.unlink()
    servers_before = tritonservers_on(exported_repository.repository)
    again = run_on_ray(
        replace(config, urls=(), model_repository=exported_repository.repository),
        cluster.address,
        servers="per-node",
    )
    assert [r.status for r in again.slides] == ["complete"] + ["skipped"] * (SLIDES - 1)
    assert read_summary(out)[stems[0]]["ray"]["node_id"] == nodes["node_a"]
    np.testing.assert_array_equal(
        np.load(SlideOutputs(out, stems[0]).prob_map),
        np.load(SlideOutputs(reference_out, stems[0]).prob_map),
    )
    assert not list(out.glob(".*.tmp"))
    assert tritonservers_on(exported_repository.repository) == servers_before, "server left"
    retry_s = times.get("retry", float("nan")) - times["kill"]
    print(
        f"\ncohort of {SLIDES} slides on 2 Ray nodes, node b killed mid-slide: {cohort_s:.1f} s;"
        f" the retry started {retry_s:.1f} s after the kill; node b had finished"
        f" {len(seen_on_b) - 1} slide(s) before"
    )
