"""``make soak``: its windows and growth arithmetic, the malformed-request generator, and a
tiny run against the real server (every malformed request refused, no answer changed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsi_bench.soak_report import growth, percentiles, plan_windows, verdict
from wsi_bench.soak_requests import (
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

# --- windows and growth ---------------------------------------------------------------------


def test_windows_of_the_default_and_a_tiny_run() -> None:
    default = plan_windows(600)
    assert default.warmup_s == 120
    assert default.baseline == (120, 180)
    assert default.final == (540, 600)
    assert default.perf == ((30, 120), (240, 480))
    tiny = plan_windows(30)
    assert tiny.warmup_s == 15  # at most half the run
    assert tiny.baseline == (15, 18)
    np.testing.assert_allclose(tiny.final, (27, 30))
    assert plan_windows(600, warmup_s=60).baseline == (60, 120)


def test_growth_ignores_the_warm_up_ramp_and_a_passing_spike() -> None:
    windows = plan_windows(600)
    t = np.arange(0, 601, 2.0)
    rss = np.where(t < 120, 500 + 4 * t, 1000.0)  # ramps up to 980 MiB, then flat
    rss[(t > 300) & (t < 310)] = 3000.0  # a huge request passes through
    g = growth(t, rss, windows)
    assert g["baseline"] == g["final"] == 1000.0
    assert g["growth"] == 0.0
    assert g["start"] == 500.0 and g["peak"] == 3000.0


def test_growth_measures_a_steady_leak() -> None:
    windows = plan_windows(600)
    t = np.arange(0, 601, 1.0)
    rss = 1000.0 + 0.5 * t  # +0.5 MiB/s for the whole run
    g = growth(t, rss, windows)
    # medians at 150 s (1075 MiB) and 570 s (1285 MiB)
    np.testing.assert_allclose(g["baseline"], 1075.0)
    np.testing.assert_allclose(g["final"], 1285.0)
    np.testing.assert_allclose(g["growth"], 210.0 / 1075.0)


def test_growth_is_none_without_samples_in_a_window() -> None:
    g = growth([0.0, 1.0], [10.0, 11.0], plan_windows(600))
    assert g["baseline"] is None and g["growth"] is None


def test_percentiles_in_milliseconds() -> None:
    p = percentiles([0.1] * 99 + [1.0])
    assert p["n"] == 100 and p["p50_ms"] == 100.0
    np.testing.assert_allclose(p["p99_ms"], 109.0)  # numpy's linear interpolation
    assert percentiles([]) == {"n": 0, "p50_ms": None, "p99_ms": None}


def _results(changed: int = 0, lost: int = 0, tree: float | None = 0.01) -> dict:
    return {
        "answers": {"changed": changed, "lost": lost, "compared": 10},
        "stream": {"bad_accepted": 0},
        "rss": {"growth": {"server_tree": {"growth": tree}}},
        "server": {"alive_at_end": True},
    }


def test_verdict_names_each_failure() -> None:
    assert verdict(_results()) == []
    assert verdict(_results(changed=2)) == ["2 good answers changed"]
    assert verdict(_results(lost=1)) == ["1 good answers lost"]
    assert verdict(_results(tree=0.05)) == ["server memory grew 5.0% after warm-up (limit 5%)"]
    assert "could not be measured" in verdict(_results(tree=None))[0]
    assert verdict(_results(tree=0.07), max_growth=0.10) == []


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
def test_tiny_soak_against_the_real_server(tmp_path: Path, exported_repository) -> None:
    from wsi_bench.soak import main

    out = tmp_path / "out"
    # Growth over a 30 s run measures start-up, not a leak: the limit is lifted here and
    # the figures are only checked for presence.
    code = main(
        ["--quick", "--duration-s", "30", "--clients", "1", "--modes", "dense",
         "--slides", "1", "--size", "2048", "--repository", str(exported_repository.repository),
         "--out", str(out), "--workdir", str(tmp_path / "work"), "--max-growth", "1000"]
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert code == 0, results["verdict"]
    stream = results["stream"]
    # every kind the generator makes was sent and refused: none answered OK
    assert set(stream["bad_kinds"]) == {f"bad:{k}" for k in stream["generator_kinds"]}
    for kind in stream["bad_kinds"]:
        assert "OK" not in stream["by_kind"][kind], (kind, stream["by_kind"][kind])
    assert stream["bad_accepted"] == 0
    assert set(stream["bad_by_status"]) <= {"INVALID_ARGUMENT", "NOT_FOUND"}
    assert stream["by_kind"]["bad:unknown_model"] == {"NOT_FOUND": stream["by_kind"][
        "bad:unknown_model"]["NOT_FOUND"]}  # fmt: skip
    assert {h["status"] for h in stream["huge"]} == {"INVALID_ARGUMENT"}
    # good answers: compared with their first answer, none changed or lost
    assert stream["good_sent"] >= 2 and stream["compared"] >= 1
    assert results["answers"]["changed"] == 0 and results["answers"]["lost"] == 0
    cohort = results["cohort"]
    assert cohort["runs"] >= 1 and cohort["failed_runs"] == 0 and cohort["changed"] == 0
    assert cohort["requests"] >= 1 and cohort["peak_rss_mib"] > 0
    # RSS series of the server, every stub (two tiler instances) and the soak itself
    growth_keys = set(results["rss"]["growth"])
    assert {"server_tree", "server", "shm_pool", "server_rss_sum", "driver"} <= growth_keys
    assert {"stub:patch_tiler#0", "stub:patch_tiler#1", "stub:tumor_classifier#0",
            "stub:tumor_detector_dense#0", "stub:grid_assembler#0"} <= growth_keys  # fmt: skip
    assert results["rss"]["growth"]["server_tree"]["growth"] is not None
    assert results["server"]["alive_at_end"] and results["server"]["stub_restarts"] == 0
    assert len(results["rss"]["samples"]) >= 20
    assert results["perf"]["runs"] >= 1 and results["perf"]["failures"] == 0
    assert results["stream"]["good_latency"]["p50_ms"] > 0
    report = (out / "report.md").read_text()
    assert "| nothing lost | " in report and "PASS" in report
    assert (out / "rss.png").stat().st_size > 10_000
