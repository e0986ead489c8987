"""``make soak``: its windows, growth and trend arithmetic, the verdict, the memory split, the
malformed-request generator, and a tiny run against the real server (every malformed
request refused, no answer changed, the memory attributed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsi_bench.soak.load import private_mib
from wsi_bench.soak.report import growth, percentiles, plan_windows, trend, verdict
from wsi_bench.soak.requests import (
    CLASSIFIER,
    DENSE,
    ENSEMBLE,
    MIB,
    BadRequestGenerator,
    SoakRequest,
    good_requests,
)
from wsi_tumor import contract
from wsi_tumor.errors import RequestError
from wsi_tumor.serving.limits import DENSE_MAX_REGIONS, MAX_PATCHES_PER_REQUEST
from wsi_tumor.serving.tiling import validate_regions, validate_request

# --- windows, growth and trend --------------------------------------------------------------


def test_windows_of_the_ten_minute_and_the_hour_run() -> None:
    ten = plan_windows(600)
    assert ten.warmup_s == 200 and ten.baseline == (200, 260)
    assert ten.final == (540, 600) and ten.trend == (400, 600)
    assert ten.perf == ((50, 200), (290, 370))  # never in the baseline or the last third
    hour = plan_windows(3600)
    assert hour.baseline == (1200, 1560) and hour.trend == (2400, 3600)
    assert hour.perf == ((300, 1200), (1740, 2220))
    assert plan_windows(600, warmup_s=120).baseline == (120, 180)
    np.testing.assert_allclose(plan_windows(30).final, (27, 30))


def test_a_plateau_passes_whatever_the_warm_up_ramp_and_the_spikes() -> None:
    windows = plan_windows(3600)
    t = np.arange(0, 3601, 2.0)
    rss = np.where(t < 900, 500 + t, 1400.0) + np.random.default_rng(0).normal(0, 5, t.size)
    rss[(t > 3000) & (t < 3010)] += 800.0  # a huge request passes through
    g = growth(t, rss, windows)
    assert abs(g["growth"]) < 0.01 and g["peak"] > 2000
    low, high = g["slope_ci"]
    assert low <= 0 <= high and high - low < 0.5  # MiB/min: the bin medians ignore the spike


def test_a_steady_leak_fails_with_its_slope() -> None:
    windows = plan_windows(600)
    t = np.arange(0, 601, 2.0)
    g = growth(t, 1000.0 + 0.5 * t, windows)  # 30 MiB/min
    np.testing.assert_allclose(g["baseline"], 1000 + 0.5 * 230, atol=1)
    np.testing.assert_allclose(g["slope"], 30.0, rtol=1e-6)
    np.testing.assert_allclose(g["slope_ci"], (30.0, 30.0), atol=1e-6)
    assert trend(t, 1000.0 + 0.5 * t, (0, 2)) is None  # under 3 bins with samples


def test_growth_is_none_without_samples_in_a_window() -> None:
    g = growth([0.0, 1.0], [10.0, 11.0], plan_windows(600))
    assert g["baseline"] is None and g["growth"] is None and g["slope"] is None


def test_percentiles_in_milliseconds() -> None:
    p = percentiles([0.1] * 99 + [1.0])
    assert p["n"] == 100 and p["p50_ms"] == 100.0
    np.testing.assert_allclose(p["p99_ms"], 109.0)  # numpy's linear interpolation
    assert percentiles([]) == {"n": 0, "p50_ms": None, "p99_ms": None}


def _results(changed=0, lost=0, tree=0.01, ci=(-0.2, 0.3)) -> dict:
    return {
        "answers": {"changed": changed, "lost": lost, "compared": 10},
        "stream": {"bad_accepted": 0},
        "memory": {"growth": {"tree": {"growth": tree, "slope": 0.1, "slope_ci": ci}}},
        "server": {"alive_at_end": True},
    }


def test_verdict_names_each_failure() -> None:
    assert verdict(_results()) == []
    assert verdict(_results(changed=2)) == ["2 good answers changed"]
    assert verdict(_results(lost=1)) == ["1 good answers lost"]
    assert verdict(_results(tree=0.05)) == []  # at most 5 % passes
    assert verdict(_results(tree=0.051)) == ["server memory grew 5.1% after warm-up (limit 5%)"]
    assert "could not be measured" in verdict(_results(tree=None))[0]
    assert verdict(_results(tree=0.07), max_growth=0.10) == []
    assert verdict(_results(ci=(0.2, 0.9))) == []  # under 1 MiB/min
    assert verdict(_results(ci=(-3.0, 9.0))) == []  # includes 0
    assert "still grows over the last third" in verdict(_results(ci=(0.5, 1.5)))[0]


def test_private_memory_splits_heap_and_mapped_files() -> None:
    import os

    import psutil

    split = private_mib(os.getpid())
    assert split["heap"] > 10 and split["files"] > 0  # numpy's arrays, the interpreter's pages
    uss = psutil.Process().memory_full_info().uss / MIB
    np.testing.assert_allclose(split["heap"] + split["files"], uss, rtol=0.05)


# --- the malformed-request generator -------------------------------------------------------
EXPECTED = {
    ENSEMBLE: ({contract.REGIONS_TENSOR: np.uint8, contract.CELL_MASK_TENSOR: np.bool_}, 0),
    DENSE: ({contract.REGIONS_TENSOR: np.uint8, contract.CELL_MASK_TENSOR: np.bool_}, 16),
    CLASSIFIER: ({contract.PATCHES_TENSOR: np.float32}, 256),
}


def refusal(request: SoakRequest) -> str | None:
    """Why the server must refuse ``request`` (Triton's own checks, then the models'); None
    when it is valid. An offline replica of what the real server does, see the slow test."""
    if request.model not in EXPECTED or request.version:
        return "unknown model or version"
    dtypes, max_batch = EXPECTED[request.model]
    tensors = {t.name: t for t in request.inputs}
    if set(tensors) != set(dtypes):
        return "inputs"
    for name, tensor in tensors.items():
        if tensor.array.dtype != dtypes[name]:
            return f"{name} dtype"
        if tensor.shape is not None and tensor.shape != tensor.array.shape:
            return f"{name} byte count"
    if request.model == CLASSIFIER:
        patches = tensors[contract.PATCHES_TENSOR].array
        if patches.ndim != 4 or patches.shape[1:] != (3, 224, 224):
            return "patches shape"
        return "batch" if len(patches) > max_batch else None
    regions = tensors[contract.REGIONS_TENSOR].array
    mask = tensors[contract.CELL_MASK_TENSOR].array
    if regions.ndim != 4 or regions.shape[-1] != 3 or mask.ndim != 3:
        return "rank or channels"
    if request.model == DENSE and len(regions) > DENSE_MAX_REGIONS:
        return "batch"
    try:
        if request.model == ENSEMBLE:
            validate_request(regions, mask)
        else:
            validate_regions(regions, mask, (contract.DENSE_MIN_CELLS, contract.DENSE_MAX_CELLS))
            if len(regions) == 0:
                return "no regions"
    except RequestError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("cap_mib", [16, 64, 200])
def test_every_generated_bad_request_is_refused_and_within_the_cap(cap_mib: int) -> None:
    generator = BadRequestGenerator(seed=cap_mib, max_bytes=cap_mib * MIB)
    seen = set()
    for _ in range(6):
        for request in generator.round():
            seen.add(request.kind)
            assert request.kind.startswith("bad:") and not request.good
            assert request.nbytes <= cap_mib * MIB, request.kind
            assert refusal(request) is not None, (request.kind, request.model)
    assert seen == {f"bad:{kind}" for kind in generator.kinds}
    assert len(generator.kinds) >= 20


def test_huge_requests_exceed_the_limits_at_the_cap() -> None:
    for cap in (16, 64):
        generator = BadRequestGenerator(max_bytes=cap * MIB)
        count, cells = generator.huge_shape(ENSEMBLE)
        assert count * cells**2 > MAX_PATCHES_PER_REQUEST
        count, cells = generator.huge_shape(DENSE)
        assert count > DENSE_MAX_REGIONS and cells >= contract.DENSE_MIN_CELLS
    with pytest.raises(ValueError, match="too small"):
        BadRequestGenerator(max_bytes=MIB).huge_shape(ENSEMBLE)


def test_generator_is_reproducible() -> None:
    first = [r.kind for r in BadRequestGenerator(seed=3).round()]
    assert first == [r.kind for r in BadRequestGenerator(seed=3).round()]


def test_good_requests_are_valid_and_fixed_by_the_seed() -> None:
    goods = good_requests(seed=1)
    assert all(r.good and refusal(r) is None for r in goods), [refusal(r) for r in goods]
    assert {r.model for r in goods} == {ENSEMBLE, DENSE, CLASSIFIER}
    again = good_requests(seed=1)
    for a, b in zip(goods, again, strict=True):
        for x, y in zip(a.inputs, b.inputs, strict=True):
            np.testing.assert_array_equal(x.array, y.array)


# --- a tiny run against the real server ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.timeout(1800)  # a loaded 2-core runner: export, server start, 30 s + grace
def test_tiny_soak_against_the_real_server(tmp_path: Path, exported_repository) -> None:
    from wsi_bench.soak.cli import main

    out = tmp_path / "out"
    # Memory over a 30 s run measures start-up, not a leak: its verdict may only fail on
    # memory, and the figures are checked for presence and consistency.
    code = main(
        ["--quick", "--duration-s", "30", "--clients", "1", "--modes", "dense",
         "--slides", "1", "--size", "2048", "--repository", str(exported_repository.repository),
         "--out", str(out), "--workdir", str(tmp_path / "work")]
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    stream = results["stream"]
    # every kind the generator makes was sent and refused: none answered OK
    assert set(stream["bad_kinds"]) == {f"bad:{k}" for k in stream["generator_kinds"]}
    for kind in stream["bad_kinds"]:
        assert "OK" not in stream["by_kind"][kind], (kind, stream["by_kind"][kind])
    assert stream["bad_accepted"] == 0
    assert set(stream["bad_by_status"]) <= {"INVALID_ARGUMENT", "NOT_FOUND"}
    assert set(stream["by_kind"]["bad:unknown_model"]) == {"NOT_FOUND"}
    assert set(stream["by_kind"]["bad:huge_n"]) == {"INVALID_ARGUMENT"}
    # good answers: compared with their first answer, none changed or lost
    assert stream["good_sent"] >= 2 and stream["compared"] >= 1
    assert results["answers"]["changed"] == 0 and results["answers"]["lost"] == 0
    cohort = results["cohort"]
    assert cohort["runs"] >= 1 and cohort["failed_runs"] == 0 and cohort["changed"] == 0
    assert cohort["requests"] >= 1 and cohort["peak_rss_mib"] > 0
    assert cohort["largest_request_mib"] > 0
    # memory by part: the pool once, each process's heap and mapped files
    server = results["server"]
    assert server["alive_at_end"] and server["stub_restarts"] == 0
    assert server["allocator"] in ("jemalloc", "tcmalloc", "glibc")
    region_mib = server["pool"]["default_bytes"] / MIB
    sample = results["memory"]["samples"][-1]
    assert sample["regions"] == 5 and sample["region_mib"] == round(region_mib, 1)
    np.testing.assert_allclose(sample["pool"], 5 * region_mib, rtol=1e-3)  # resident in full
    procs = {"server", "patch_tiler#0", "patch_tiler#1", "tumor_classifier#0",
             "tumor_detector_dense#0", "grid_assembler#0"}  # fmt: skip
    assert set(sample["procs"]) == procs
    parts = sum(p["heap"] + p["files"] for p in sample["procs"].values()) + sample["pool"]
    np.testing.assert_allclose(sample["tree"], parts, atol=0.5)
    keys = set(results["memory"]["growth"])
    assert {"tree", "pool"} | {f"{p} {k}" for p in procs for k in ("heap", "files")} == keys
    assert results["memory"]["growth"]["tree"]["growth"] is not None
    assert len(results["memory"]["samples"]) >= 20
    assert results["perf"]["runs"] >= 1 and results["perf"]["failures"] == 0
    assert stream["latency"]["p50_ms"] > 0
    reasons = results["verdict"]["reasons"]
    assert code == (1 if reasons else 0) and all(r.startswith("server memory") for r in reasons)
    report = (out / "report.md").read_text()
    assert "| nothing lost | " in report and "| where it moved |" in report
    assert (out / "rss.png").stat().st_size > 10_000
