"""Memory bounds of the served models: the server's allocator and the Python backend's pool.

Two things make a Triton server's memory look like a leak (``make soak``,
``docs/reliability.md``):

- **The allocator.** glibc's ``malloc`` keeps freed memory in per-thread arenas and grows
  its mmap threshold as large blocks are freed, so the server's gRPC buffers and the stubs'
  tensors fragment heaps that are never returned (Triton's docs call it "not an actual
  memory leak" and suggest tcmalloc or jemalloc through ``LD_PRELOAD``). :func:`allocator`
  picks Debian's jemalloc, else tcmalloc, else glibc with its arenas and thresholds tuned.
- **The Python backend's shared-memory pool.** Each Python-backend model instance has one
  region in ``/dev/shm``, allocated in full when created (its pages are resident from the
  start) and grown, never shrunk, by at least the size of any tensor that does not fit.
  :func:`pool_settings` sizes it from the contract: the default holds two of the largest
  valid executions of any model (an execution's tensors are released after the answer is
  sent, so the next one's may arrive first: a valid 4-region exact request failed under
  load with room for one), so valid requests never grow it; and the server runs with a
  file-size limit (``RLIMIT_FSIZE``) at the ceiling, so a larger request is refused where
  the server copies it into the pool, before it reaches a stub, and the pool stays put.

A server killed from outside (SIGKILL, the OOM killer) cannot remove its regions, and each
holds its memory in ``/dev/shm`` until reboot: :func:`sweep_stale_regions` removes those no
process uses before a local server starts.

Ceiling of the server's memory (``docs/reliability.md`` gives the measured terms):
``server + stubs + pool <= S + sum(stub_i) + instances * ceiling_bytes``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from wsi_tumor import contract
from wsi_tumor.errors import ConfigError
from wsi_tumor.serving.limits import DENSE_MAX_REGIONS, MAX_PATCHES_PER_REQUEST

log = logging.getLogger(__name__)

MIB: Final = 1 << 20
POOL_EXECUTIONS: Final = 2
"""Largest executions one region holds at once (the next one's tensors may arrive before
the last one's are released)."""
POOL_MARGIN_BYTES: Final = 16 * MIB
"""Room in each region beyond those tensors (the stub's message queues, the per-tensor
bookkeeping, a malformed request beside them)."""
POOL_GROWTH_BYTES: Final = MIB
"""Growth step (the Python backend's own default): only bookkeeping may ever need it."""

GLIBC_TUNING: Final = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "131072",
}
"""glibc without a better allocator: two arenas instead of eight per core, every block
above 128 KiB mmap'd and unmapped on free, the heap's free top returned above 128 KiB."""
JEMALLOC_CONF: Final = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"
"""jemalloc returns freed pages within a second, from a background thread."""
SHM_DIRECTORY: Final = Path("/dev/shm")
REGION_PREFIX: Final = "triton_python_backend_shm_region_"
"""The Python backend's region names (its ``shm-region-prefix-name`` default)."""
STALE_AFTER_S: Final = 60.0
"""A region is only swept when older than this (a starting server creates it, then maps it)."""
LIBRARIES: Final = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}
ALLOCATORS: Final = ("auto", "jemalloc", "tcmalloc", "glibc")


def _patch_bytes(count: int) -> int:
    return count * contract.CHANNELS * contract.PATCH_SIZE**2 * 4


def largest_execution_bytes() -> dict[str, int]:
    """Per Python-backend model: input + output bytes of its largest valid execution.

    The tiler's is the most patches (``MAX_PATCHES_PER_REQUEST`` cells, k = 1) in and out;
    the classifier's a full batch; the dense model's ``DENSE_MAX_REGIONS`` regions of
    ``DENSE_MAX_CELLS``; the assembler's a grid of ``MAX_PATCHES_PER_REQUEST`` cells.
    """
    tiler = 0
    for cells in range(1, int(MAX_PATCHES_PER_REQUEST**0.5) + 1):
        count = MAX_PATCHES_PER_REQUEST // cells**2
        side = contract.region_size(cells)
        pixels = count * (side * side * contract.CHANNELS + cells**2)
        tiler = max(tiler, pixels + _patch_bytes(count * cells**2))
    dense_cells = contract.DENSE_MAX_CELLS**2
    dense_side = contract.region_size(contract.DENSE_MAX_CELLS)
    return {
        contract.TILER_MODEL: tiler,
        contract.CLASSIFIER_MODEL: _patch_bytes(MAX_PATCHES_PER_REQUEST)
        + 4 * MAX_PATCHES_PER_REQUEST,
        contract.DENSE_MODEL: DENSE_MAX_REGIONS
        * (dense_side**2 * contract.CHANNELS + dense_cells + 4 * dense_cells),
        contract.ASSEMBLER_MODEL: 9 * MAX_PATCHES_PER_REQUEST,
    }


@dataclass(frozen=True)
class PoolSettings:
    """The Python backend's shared-memory pool, per model instance.

    Attributes:
        default_bytes: ``shm-default-byte-size``: each region's size from the start.
        growth_bytes: ``shm-growth-byte-size``: the step it grows by when a tensor does not
            fit (by at least that tensor's size).
        ceiling_bytes: The server's file-size limit: no region grows beyond it.
    """

    default_bytes: int
    growth_bytes: int
    ceiling_bytes: int

    def server_args(self) -> list[str]:
        """The ``tritonserver`` flags that set the pool."""
        return [
            f"--backend-config=python,shm-default-byte-size={self.default_bytes}",
            f"--backend-config=python,shm-growth-byte-size={self.growth_bytes}",
        ]


def pool_settings() -> PoolSettings:
    """Pool sizes that follow from the contract: :data:`POOL_EXECUTIONS` of its largest
    valid execution plus :data:`POOL_MARGIN_BYTES`, in MiB; the ceiling allows one growth
    step."""
    largest = POOL_EXECUTIONS * max(largest_execution_bytes().values()) + POOL_MARGIN_BYTES
    default = -(-largest // MIB) * MIB
    return PoolSettings(default, POOL_GROWTH_BYTES, default + POOL_GROWTH_BYTES)


@dataclass(frozen=True)
class Allocator:
    """The allocator a server runs with.

    Attributes:
        name: ``jemalloc``, ``tcmalloc`` or ``glibc``.
        library: The preloaded library (None for glibc).
        env: Variables to add to the server's environment (stubs inherit them).
    """

    name: str
    library: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


def find_library(name: str) -> Path | None:
    """Debian's copy of ``jemalloc`` or ``tcmalloc`` (:data:`LIBRARIES`), if installed."""
    machine = platform.machine()
    for folder in (f"/usr/lib/{machine}-linux-gnu", "/usr/lib64", "/usr/lib"):
        path = Path(folder) / LIBRARIES[name]
        if path.is_file():
            return path
    return None


def allocator(choice: str = "auto", preload: str = "") -> Allocator:
    """The allocator for ``choice``: ``auto`` takes jemalloc, else tcmalloc, else glibc.

    Args:
        choice: One of :data:`ALLOCATORS`.
        preload: The caller's ``LD_PRELOAD``, kept after the allocator.

    Raises:
        ConfigError: on an unknown choice, or a named library that is not installed.
    """
    if choice not in ALLOCATORS:
        raise ConfigError(f"allocator must be one of {', '.join(ALLOCATORS)}, got {choice!r}")
    for name in ("jemalloc", "tcmalloc"):
        if choice not in ("auto", name):
            continue
        library = find_library(name)
        if library is not None:
            env = {"LD_PRELOAD": os.pathsep.join(filter(None, [str(library), preload]))}
            if name == "jemalloc":
                env["MALLOC_CONF"] = JEMALLOC_CONF
            return Allocator(name, library, env)
        if choice == name:
            raise ConfigError(f"{LIBRARIES[name]} not found: install it (make setup) or use auto")
    return Allocator("glibc", None, dict(GLIBC_TUNING))


def shm_files_in_use(pids: Iterable[int | str], directory: Path = SHM_DIRECTORY) -> set[Path]:
    """The files under ``directory`` that processes ``pids`` map or hold open; a process whose
    ``/proc`` entries cannot be read (gone, another user's) adds nothing."""
    prefix, names = f"{directory}/", []
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        names += [line.split(None, 5)[-1] for line in maps.splitlines() if prefix in line]
        for fd in fds:
            with contextlib.suppress(OSError):
                names.append(os.readlink(fd))
    found = set()
    for name in names:
        name = name.strip()
        if name.startswith(prefix) and not name.endswith("(deleted)"):
            found.add(Path(name))
    return found


def sweep_stale_regions(
    directory: Path = SHM_DIRECTORY, min_age_s: float = STALE_AFTER_S
) -> list[Path]:
    """Remove the Python-backend regions of servers that were killed: this user's
    :data:`REGION_PREFIX` files older than ``min_age_s`` that no process maps or holds open.

    Returns:
        The removed files (a warning names them and the memory freed).
    """
    now, uid = time.time(), os.getuid()
    candidates = {}
    for path in directory.glob(f"{REGION_PREFIX}*"):
        try:
            stat = path.stat()
        except OSError:
            continue
        if stat.st_uid == uid and now - stat.st_mtime >= min_age_s:
            candidates[path] = stat.st_blocks * 512
    if not candidates:
        return []
    pids = (entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit())
    stale = sorted(set(candidates) - shm_files_in_use(pids, directory))
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        freed = sum(candidates[path] for path in stale) / MIB
        log.warning(
            "removed %d Python-backend pool region(s) of killed servers (%.0f MiB): %s",
            len(stale), freed, ", ".join(path.name for path in stale),
        )  # fmt: skip
    return stale
