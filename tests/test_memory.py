"""The server's memory bounds: allocator and shared-memory pool sizes from the contract, read
back from a running server, and requests over the contract's limits refused without the
pool growing."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest

from wsi_tumor import contract
from wsi_tumor.errors import ConfigError
from wsi_tumor.serving.local_server import shm_regions
from wsi_tumor.serving.memory import (
    GLIBC_TUNING,
    JEMALLOC_CONF,
    MIB,
    POOL_MARGIN_BYTES,
    REGION_PREFIX,
    STALE_AFTER_S,
    allocator,
    find_library,
    largest_execution_bytes,
    pool_settings,
    sweep_stale_regions,
)

PATCH_BYTES = 3 * 224 * 224 * 4


def test_largest_executions_follow_the_contract() -> None:
    largest = largest_execution_bytes()
    # 256 regions of k = 1 (224 px) in, 256 float32 patches out
    assert largest[contract.TILER_MODEL] == 256 * (224 * 224 * 3 + 1) + 256 * PATCH_BYTES
    assert largest[contract.CLASSIFIER_MODEL] == 256 * PATCH_BYTES + 256 * 4
    # 16 regions of k = 32 (2208 px) + masks in, float32 grids out
    assert largest[contract.DENSE_MODEL] == 16 * (2208 * 2208 * 3 + 1024 + 4096)
    pool = pool_settings()
    assert pool.default_bytes % MIB == 0
    assert 0 <= pool.default_bytes - 2 * max(largest.values()) - POOL_MARGIN_BYTES < MIB
    assert pool.ceiling_bytes == pool.default_bytes + pool.growth_bytes
    assert pool.server_args() == [
        f"--backend-config=python,shm-default-byte-size={pool.default_bytes}",
        f"--backend-config=python,shm-growth-byte-size={pool.growth_bytes}",
    ]


def test_allocator_choices() -> None:
    glibc = allocator("glibc", "/x.so")
    assert glibc.name == "glibc" and glibc.env == GLIBC_TUNING and glibc.library is None
    with pytest.raises(ConfigError, match="allocator must be one of"):
        allocator("mimalloc")
    jemalloc = find_library("jemalloc")
    auto = allocator("auto", "/x.so")
    if jemalloc is None:
        assert auto.name in ("tcmalloc", "glibc")
        with pytest.raises(ConfigError, match=r"libjemalloc\.so\.2 not found"):
            allocator("jemalloc")
    else:
        assert auto.name == "jemalloc" and auto.library == jemalloc
        assert auto.env == {"LD_PRELOAD": f"{jemalloc}:/x.so", "MALLOC_CONF": JEMALLOC_CONF}


def test_sweep_removes_only_old_regions_that_no_process_uses(tmp_path) -> None:
    import mmap

    def region(name: str, age_s: float) -> Path:
        path = tmp_path / name
        path.write_bytes(b"\0" * 8192)
        earlier = time.time() - age_s
        os.utime(path, (earlier, earlier))
        return path

    old = 2 * STALE_AFTER_S
    stale = region(f"{REGION_PREFIX}a", old)
    mapped = region(f"{REGION_PREFIX}b", old)
    held = region(f"{REGION_PREFIX}c", old)
    young = region(f"{REGION_PREFIX}d", 0)
    foreign = region("other_region", old)
    with open(mapped, "r+b") as file, mmap.mmap(file.fileno(), 0) as view, open(held, "rb"):
        file.close()  # only the mapping keeps it in use
        assert sweep_stale_regions(tmp_path) == [stale]
        assert view[:1] == b"\0"
    assert [p for p in (stale, mapped, held, young, foreign) if p.exists()] == [
        mapped, held, young, foreign
    ]  # fmt: skip
    assert sweep_stale_regions(tmp_path, min_age_s=0) == [mapped, held, young]
    assert sweep_stale_regions(tmp_path) == [] and foreign.exists()


def _pool(pid: int) -> list[tuple[int, int]]:
    """(size, resident bytes) of each region of the server's pool."""
    return sorted((p.stat().st_size, p.stat().st_blocks * 512) for p in shm_regions(pid))


@pytest.mark.triton
def test_server_runs_with_the_chosen_allocator_and_pool(
    triton_server_factory, exported_repository
) -> None:
    server = triton_server_factory(exported_repository.repository)
    pool, chosen = pool_settings(), allocator()
    assert server.memory == chosen
    processes = [psutil.Process(server.pid), *psutil.Process(server.pid).children()]
    assert len(processes) == 6  # the server and its stubs: 2 tilers, 3 other models
    for process in processes:
        environ = process.environ()
        if chosen.library is None:
            assert {k: environ.get(k) for k in GLIBC_TUNING} == GLIBC_TUNING
        else:  # preloaded into the server and every stub
            assert environ["LD_PRELOAD"].split(os.pathsep)[0] == str(chosen.library)
            assert str(chosen.library) in Path(f"/proc/{process.pid}/maps").read_text()
        limits = Path(f"/proc/{process.pid}/limits").read_text().splitlines()
        (line,) = [x for x in limits if x.startswith("Max file size")]
        assert line.split()[3:5] == [str(pool.ceiling_bytes)] * 2
    log = Path(server.log_path).read_text()
    assert f'"shm-default-byte-size":"{pool.default_bytes}"' in log
    assert f'"shm-growth-byte-size":"{pool.growth_bytes}"' in log
    # one region per instance, created at the default size and resident in full
    assert _pool(server.pid) == [(pool.default_bytes, pool.default_bytes)] * 5


def _infer(server, model: str, *tensors: tuple[str, np.ndarray, list[int] | None]) -> str:
    """``OK``, or the gRPC status and message of the answer to one request."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    inputs = []
    for name, array, shape in tensors:
        item = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        item.set_data_from_numpy(array)
        if shape is not None:
            item.set_shape(shape)
        inputs.append(item)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.infer(model, inputs, client_timeout=600)
    except InferenceServerException as exc:
        return f"{exc.status()}: {exc.message()}"
    finally:
        client.close()
    return "OK"


@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.timeout(1800)  # two 256-patch requests and 1.3 GB sent, on a loaded runner
def test_requests_over_the_contract_are_refused_and_the_pool_stays(
    triton_server_factory, exported_repository
) -> None:
    server = triton_server_factory(exported_repository.repository)
    before, pool_bytes = _pool(server.pid), pool_settings().default_bytes
    stubs = {p.pid for p in psutil.Process(server.pid).children()}
    rng = np.random.default_rng(0)
    regions, mask = contract.REGIONS_TENSOR, contract.CELL_MASK_TENSOR
    ensemble, dense = contract.ENSEMBLE_MODEL, contract.DENSE_MODEL

    def k1(count: int) -> tuple[tuple[str, np.ndarray, None], ...]:
        pixels = rng.integers(0, 256, (count, 224, 224, 3), np.uint8)
        return (regions, pixels, None), (mask, np.ones((count, 1, 1), bool), None)

    # the largest valid exact request (256 cells, 256 patches), twice at once, fits the pool
    largest = [k1(256), k1(256)]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda tensors: _infer(server, ensemble, *tensors), largest))
    assert answers == ["OK", "OK"]
    assert _infer(server, ensemble, *k1(257)).startswith("StatusCode.INVALID_ARGUMENT")
    patches = np.zeros((257, 3, 224, 224), np.float32)
    answer = _infer(server, contract.CLASSIFIER_MODEL, (contract.PATCHES_TENSOR, patches, None))
    assert "batch-size must be <= 256" in answer
    # the largest valid dense request's bytes plus one: refused by Triton, before the stub
    side = contract.region_size(contract.DENSE_MAX_CELLS)
    shape = [16, side, side, 3]
    pixels = np.zeros(int(np.prod(shape)) + 1, np.uint8)
    cells = np.zeros((16, 32, 32), bool)
    answer = _infer(server, dense, (regions, pixels, shape), (mask, cells, None))
    assert "input byte size mismatch" in answer and str(pixels.size) in answer
    small = np.zeros((17, 352, 352, 3), np.uint8)
    answer = _infer(server, dense, (regions, small, None), (mask, np.ones((17, 3, 3), bool), None))
    assert "batch-size must be <= 16" in answer
    # too big for the pool: refused where the server copies it in; no region grows
    cells = next(k for k in range(33, 99) if 16 * 3 * contract.region_size(k) ** 2 > pool_bytes)
    big = np.zeros((16, contract.region_size(cells), contract.region_size(cells), 3), np.uint8)
    too_many = np.ones((16, cells, cells), bool)
    answer = _infer(server, dense, (regions, big, None), (mask, too_many, None))
    assert "Failed to increase the shared memory pool size" in answer
    assert _pool(server.pid) == before
    assert {p.pid for p in psutil.Process(server.pid).children()} == stubs
    assert _infer(server, ensemble, *k1(2)) == "OK"
