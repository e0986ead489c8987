"""Start and stop a real local ``tritonserver`` process on free ports.

Used by the client's embedded mode (no ``--url``), by the benchmarks and by the test
fixtures. The server runs in its own process group, so stopping it also ends the Python
backend stub processes it spawned, even when the caller failed half-way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from wsi_tumor.errors import ServerError
from wsi_tumor.serving.memory import (
    Allocator,
    PoolSettings,
    allocator,
    pool_settings,
    shm_files_in_use,
    sweep_stale_regions,
)

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
LOOPBACK = "127.0.0.1"
"""The only address the local server listens on: nothing on the network can reach it."""
RESTRICTED_PROTOCOLS = ("shared-memory", "model-repository", "trace", "logging")
"""APIs the client does not use and that change the server or read its files: refused unless
the request carries the admin header. Statistics stay open (read-only; perf_analyzer 2.51
needs them over gRPC, where it cannot send headers)."""
ADMIN_HEADER = "wsi-admin-key"


def shm_regions(pid: int) -> list[Path]:
    """The shared-memory files (``/dev/shm``) process ``pid`` maps or holds open: for a
    tritonserver, the Python backend's regions, one per stub. Empty where ``/proc`` cannot
    be read."""
    return sorted(shm_files_in_use([pid]))


def _limit_file_size(limit: int) -> None:
    """In the server's process before exec: no file may grow beyond ``limit`` bytes (the
    pool's regions included); a write past it fails with EFBIG instead of killing it."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def find_executable(name: str, env_var: str) -> Path:
    """Locate a binary of ``make setup``: ``$env_var``, then PATH, then this venv's bin.

    Raises:
        ServerError: when none exists (run ``make setup``).
    """
    candidates = [os.environ.get(env_var), shutil.which(name)]
    candidates.append(str(Path(sys.prefix) / "bin" / name))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ServerError(
        f"{name} not found on PATH, in ${env_var} or in {Path(sys.prefix) / 'bin'}: "
        "run `make setup` to install it"
    )


def find_tritonserver() -> Path:
    """The tritonserver launcher ($TRITONSERVER, PATH, this venv's bin); ServerError if none."""
    return find_executable("tritonserver", "TRITONSERVER")


def find_backend_directory() -> Path | None:
    """The backend directory the local tritonserver loads backends from, if found.

    Looks at ``$TRITON_BACKEND_DIRECTORY``, the ``.triton/backends`` beside this project's
    launcher (``.venv/bin/tritonserver``), then ``<server prefix>/backends`` and
    ``/opt/tritonserver/backends`` (NVIDIA's containers).
    """
    candidates: list[Path] = []
    if os.environ.get("TRITON_BACKEND_DIRECTORY"):
        candidates.append(Path(os.environ["TRITON_BACKEND_DIRECTORY"]))
    try:
        launcher = find_tritonserver()
        candidates.append(launcher.parent.parent.parent / ".triton" / "backends")
        candidates.append(launcher.resolve().parent.parent / "backends")
    except ServerError:
        pass
    candidates.append(Path("/opt/tritonserver/backends"))
    return next((c for c in candidates if c.is_dir()), None)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalTritonServer:
    """A ``tritonserver`` child process serving ``repository`` on free loopback ports.

    It listens on 127.0.0.1 only, with model control off and the APIs the client does not
    need that change the server or read its files (shared-memory registration, repository
    index and control, trace and log settings) restricted to requests carrying
    :attr:`admin_headers`; metrics are off unless asked for.

    Its memory is bounded by :mod:`wsi_tumor.serving.memory`: it and its stubs run with
    ``allocator`` (jemalloc when installed), and the Python backend's pool with ``pool``
    (regions sized from the contract, none growing past the ceiling; None: Triton's
    defaults, unbounded).

    Use as a context manager; ``grpc_url``/``http_url`` are ``host:port`` strings for
    tritonclient. The server's log is kept in ``log_path`` and quoted when start-up fails.

    Args:
        repository: Triton model repository directory.
        ready_timeout_s: Seconds to wait for ``/v2/health/ready``.
        extra_args: More ``tritonserver`` flags.
        metrics: Serve Prometheus metrics (on loopback) too.
        admin_key: Value of the ``wsi-admin-key`` header that unlocks the restricted APIs
            (:data:`RESTRICTED_PROTOCOLS`); random per server unless given.
        log_path: Where the server's stdout/stderr go (a temporary file by default).
        binary: The tritonserver to run (default: :func:`find_tritonserver`).
        environment: Variables set for the server last (e.g. a ``PATH`` whose first
            ``python3`` is the Python backend's environment, ``LD_LIBRARY_PATH``).
        allocator: ``auto``, ``jemalloc``, ``tcmalloc`` or ``glibc`` (tuned).
        pool: The Python backend's pool sizes and ceiling.
    """

    repository: Path
    ready_timeout_s: float = READY_TIMEOUT_S
    extra_args: tuple[str, ...] = ()
    log_path: Path | None = None
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    metrics: bool = False
    binary: Path | None = None
    environment: dict[str, str] = field(default_factory=dict)
    admin_key: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    allocator: str = "auto"
    pool: PoolSettings | None = field(default_factory=pool_settings)
    memory: Allocator | None = field(default=None, init=False)
    """The allocator the running server was started with."""
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _owns_log: bool = field(default=False, init=False, repr=False)
    _shm: list[Path] = field(default_factory=list, init=False, repr=False)

    @property
    def http_url(self) -> str:
        """``127.0.0.1:PORT`` of the HTTP endpoint."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``127.0.0.1:PORT`` of the gRPC endpoint."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        """gRPC headers that unlock the restricted APIs (the repository index, for tests).

        Triton expects a restricted gRPC protocol's key as ``triton-grpc-protocol-<key>``.
        """
        return {f"triton-grpc-protocol-{ADMIN_HEADER}": self.admin_key}

    @property
    def pid(self) -> int | None:
        """Process id of the server (its stubs are its children), None when not started."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> LocalTritonServer:
        """Start the server and block until it reports ready.

        Raises:
            ServerError: when the repository is missing, the binary is missing, the process
                exits early, or it is not ready within ``ready_timeout_s``; the message
                quotes the end of the server log.
        """
        repository = Path(self.repository)
        if not repository.is_dir():
            raise ServerError(f"{repository}: model repository directory does not exist")
        binary = self.binary or find_tritonserver()
        sweep_stale_regions()
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(handle)
            self.log_path, self._owns_log = Path(name), True
        restricted = f"{','.join(RESTRICTED_PROTOCOLS)}:{ADMIN_HEADER}={self.admin_key}"
        command = [
            str(binary),
            f"--model-repository={repository.resolve()}",
            f"--http-address={LOOPBACK}",
            f"--http-port={self.http_port}",
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={self.metrics_port}",
            f"--allow-metrics={'true' if self.metrics else 'false'}",
            "--model-control-mode=none",
            f"--grpc-restricted-protocol={restricted}",
            f"--http-restricted-api={restricted}",
            "--strict-readiness=true",
            "--exit-on-error=true",
            *(self.pool.server_args() if self.pool else []),
            *self.extra_args,
        ]
        env = dict(os.environ)
        # Python-backend models run under the first python3 on PATH: make it this interpreter.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        self.memory = allocator(self.allocator, env.get("LD_PRELOAD", ""))
        env.update({k: v for k, v in self.memory.env.items() if k == "LD_PRELOAD" or k not in env})
        env.update(self.environment)
        ceiling = self.pool.ceiling_bytes if self.pool else None
        log.info("starting %s", " ".join(command))
        log.info(
            "allocator %s; Python-backend pool %s",
            self.memory.name,
            f"{self.pool.default_bytes} B per instance, ceiling {ceiling} B" if self.pool else
            "Triton's defaults",
        )  # fmt: skip
        with open(self.log_path, "wb") as log_file:
            self._process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                restore_signals=False,
                preexec_fn=None if ceiling is None else lambda: _limit_file_size(ceiling),
            )
        self._wait_ready()
        self._shm = shm_regions(self._process.pid)
        log.info("tritonserver ready: grpc %s, http %s", self.grpc_url, self.http_url)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if not self.running:
                message = (
                    f"tritonserver exited with code {self._process_code()} while starting on "
                    f"{self.repository}:\n{self.log_tail()}"
                )
                self.stop()
                raise ServerError(message)
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        message = (
            f"tritonserver on {self.repository} not ready after {self.ready_timeout_s:.0f} s:\n"
            f"{self.log_tail()}"
        )
        self.stop()
        raise ServerError(message)

    def _process_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log."""
        if self.log_path is None or not self.log_path.exists():
            return "(no server log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """Stop the server and its backend stubs (SIGTERM to the group, SIGKILL on timeout).

        The group is killed even when the server itself already died, so no Python-backend
        stub outlives it. A log file this object created is removed.
        """
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                try:
                    process.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    log.warning("tritonserver did not stop on %s; escalating", sig.name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        self._remove_shm()
        if self._owns_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path, self._owns_log = None, False

    def kill(self) -> None:
        """Kill the server and its stubs at once with SIGKILL, as a crash would (for tests)."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self._remove_shm()

    def _remove_shm(self) -> None:
        """Unlink the Python backend's shared-memory regions a killed server leaves behind
        (a clean shutdown removes them itself; these would hold their memory until reboot)."""
        for path in self._shm:
            path.unlink(missing_ok=True)
        self._shm = []

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
