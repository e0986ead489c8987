"""Tiling logic, and the ensemble on the real server against the PyTorch model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from wsi_tumor import contract
from wsi_tumor.data.samples import REAL_HE
from wsi_tumor.errors import RequestError
from wsi_tumor.serving import MAX_PATCHES_PER_REQUEST, max_regions_per_request
from wsi_tumor.serving.tiling import assemble_grid, cells_for_region, tile_regions


def _ramp_regions(count: int, cells: int) -> np.ndarray:
    size = contract.region_size(cells)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    return np.stack([(base + 17 * n).astype(np.uint8) for n in range(count)])


def test_tile_regions_cuts_the_patch_of_each_true_cell_in_row_major_order() -> None:
    regions = _ramp_regions(2, 3)
    mask = np.zeros((2, 3, 3), bool)
    mask[0, 0, 2] = mask[0, 2, 0] = mask[1, 1, 1] = True
    patches = tile_regions(regions, mask)
    s, size = contract.PATCH_STRIDE, contract.PATCH_SIZE
    expected = [
        regions[n, r * s : r * s + size, c * s : c * s + size]
        for n, r, c in [(0, 0, 2), (0, 2, 0), (1, 1, 1)]
    ]
    assert patches.shape == (3, 3, size, size) and patches.dtype == np.float32
    for got, crop in zip(patches, expected, strict=True):
        np.testing.assert_array_equal(got, contract.normalise(crop).transpose(2, 0, 1))


def test_assemble_grid_scatters_in_tiler_order_and_zeroes_off_cells() -> None:
    mask = np.array([[[True, False], [False, True]], [[False, True], [False, False]]])
    grid = assemble_grid(np.array([[0.1], [0.2], [0.3]], np.float32), mask)
    np.testing.assert_array_equal(
        grid, np.array([[[0.1, 0], [0, 0.2]], [[0, 0.3], [0, 0]]], np.float32)
    )


@pytest.mark.parametrize(
    ("regions", "mask", "message"),
    [
        (np.zeros((1, 352, 352, 3), np.float32), np.ones((1, 3, 3), bool), "dtype must be uint8"),
        (np.zeros((352, 352, 3), np.uint8), np.ones((1, 3, 3), bool), r"shape must be \[N, H, W"),
        (np.zeros((1, 200, 200, 3), np.uint8), np.ones((1, 1, 1), bool), "smaller than one"),
        (np.zeros((1, 300, 300, 3), np.uint8), np.ones((1, 2, 2), bool), r"224 \+ \(k - 1\)"),
        (np.zeros((1, 352, 288, 3), np.uint8), np.ones((1, 3, 3), bool), "must be square"),
        (np.zeros((1, 352, 352, 3), np.uint8), np.ones((1, 4, 4), bool), r"\[1, 3, 3\]"),
        (np.zeros((1, 352, 352, 3), np.uint8), np.ones((1, 3, 3), np.uint8), "dtype must be bool"),
        (np.zeros((1, 352, 352, 3), np.uint8), np.zeros((1, 3, 3), bool), "no cell is true"),
        (np.zeros((5, 672, 672, 3), np.uint8), np.ones((5, 8, 8), bool), "at most 4 regions"),
    ],
)
def test_tile_regions_rejects_malformed_requests(regions, mask, message) -> None:
    with pytest.raises(RequestError, match=message):
        tile_regions(regions, mask)


def test_region_geometry_and_limits_follow_the_contract() -> None:
    assert [cells_for_region(contract.region_size(k)) for k in (1, 3, 8)] == [1, 3, 8]
    assert max_regions_per_request(contract.REGION_CELLS) * contract.REGION_CELLS**2 <= (
        MAX_PATCHES_PER_REQUEST
    )
    assert max_regions_per_request(8) == 4
    with pytest.raises(RequestError, match="cells <= 16"):
        max_regions_per_request(17)


def test_run_batched_isolates_a_bad_request(exported_repository) -> None:
    from wsi_tumor.serving.onnx_session import (
        build_session,
        run_batched,
        validate_patches,
        validated,
    )

    session = build_session(exported_repository.onnx_path)
    rng = np.random.default_rng(1)
    good = [rng.uniform(-1, 1, (n, 3, 224, 224)).astype(np.float32) for n in (2, 3)]
    bad = np.zeros((1, 3, 100, 100), np.float32)
    requests = [
        validated(lambda x: {contract.PATCHES_TENSOR: validate_patches(x)}, batch)
        for batch in (good[0], bad, good[1])
    ]
    results = run_batched(session, requests, contract.PROBABILITIES_TENSOR)
    assert isinstance(results[1], RequestError) and "shape must be" in str(results[1])
    for batch, result in zip(good, [results[0], results[2]], strict=True):
        (alone,) = session.run(None, {contract.PATCHES_TENSOR: batch})
        np.testing.assert_allclose(result, alone, atol=1e-5)


# --- real server -----------------------------------------------------------------------------
def _real_regions(cells: int) -> tuple[np.ndarray, np.ndarray]:
    import tifffile

    image = tifffile.imread(REAL_HE)[..., :3]
    size = contract.region_size(cells)
    regions = np.stack([image[:size, :size], image[-size:, -size:]]).astype(np.uint8)
    rng = np.random.default_rng(4)
    mask = rng.random((2, cells, cells)) < 0.3  # a typical tissue fraction
    return regions, mask


def _ensemble_inputs(client_module, regions: np.ndarray, mask: np.ndarray) -> list:
    dtypes = {np.dtype(np.uint8): "UINT8", np.dtype(np.bool_): "BOOL", np.dtype(np.float32): "FP32"}
    inputs = []
    for name, array in ((contract.REGIONS_TENSOR, regions), (contract.CELL_MASK_TENSOR, mask)):
        tensor = client_module.InferInput(name, list(array.shape), dtypes[array.dtype])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


@pytest.fixture(scope="module")
def server(triton_server_factory, exported_repository):
    return triton_server_factory(exported_repository.repository)


@pytest.fixture(scope="module")
def good_request(exported_repository):
    """Real regions (k = 8), their mask and the PyTorch model applied patch by patch."""
    import torch

    from wsi_tumor.models.checkpoint import load_model

    regions, mask = _real_regions(contract.REGION_CELLS)
    model = load_model(exported_repository.checkpoint)
    s, size = contract.PATCH_STRIDE, contract.PATCH_SIZE
    expected = np.zeros(mask.shape, np.float32)
    with torch.no_grad():
        for n, row, col in zip(*np.nonzero(mask), strict=True):
            crop = regions[n, row * s : row * s + size, col * s : col * s + size]
            x = torch.from_numpy(contract.normalise(crop).transpose(2, 0, 1)[None].copy())
            expected[n, row, col] = torch.sigmoid(model(x)).item()
    return regions, mask, expected


@pytest.mark.triton
def test_ensemble_matches_pytorch_patch_by_patch(server, good_request) -> None:
    import tritonclient.grpc as grpcclient

    regions, mask, expected = good_request
    client = grpcclient.InferenceServerClient(server.grpc_url)
    result = client.infer(contract.ENSEMBLE_MODEL, _ensemble_inputs(grpcclient, regions, mask))
    grid = result.as_numpy(contract.GRID_TENSOR)
    assert grid is not None and grid.shape == mask.shape
    np.testing.assert_allclose(grid, expected, atol=1e-4)
    assert np.all(grid[~mask] == 0) and np.all(grid[mask] > 0)


BAD_REQUESTS = [
    ("float regions", np.zeros((1, 352, 352, 3), np.float32), np.ones((1, 3, 3), bool), "regions"),
    ("rank 3 regions", np.zeros((352, 352, 3), np.uint8), np.ones((1, 3, 3), bool), "regions"),
    (
        "region below one patch",
        np.zeros((1, 200, 200, 3), np.uint8),
        np.ones((1, 1, 1), bool),
        "smaller than one 224 px patch",
    ),
    (
        "region not 224 + (k-1)*64",
        np.zeros((1, 300, 300, 3), np.uint8),
        np.ones((1, 2, 2), bool),
        "not 224 + (k - 1) * 64",
    ),
    (
        "mask shape",
        np.zeros((1, 352, 352, 3), np.uint8),
        np.ones((1, 4, 4), bool),
        "cell_mask: shape must be [N, k, k] = [1, 3, 3]",
    ),
    (
        "empty mask",
        np.zeros((1, 352, 352, 3), np.uint8),
        np.zeros((1, 3, 3), bool),
        "no cell is true",
    ),
    (
        "too many patches",
        np.zeros((5, 672, 672, 3), np.uint8),
        np.ones((5, 8, 8), bool),
        "more than the 256 patches",
    ),
]


@pytest.mark.triton
@pytest.mark.parametrize(
    ("case", "regions", "mask", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_request_gets_its_error_and_server_keeps_serving(
    server, good_request, case, regions, mask, message
) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(contract.ENSEMBLE_MODEL, _ensemble_inputs(grpcclient, regions, mask))
    assert message in str(caught.value), f"{case}: {caught.value}"
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    good_regions, good_mask, expected = good_request
    result = client.infer(
        contract.ENSEMBLE_MODEL, _ensemble_inputs(grpcclient, good_regions[:1], good_mask[:1])
    )
    np.testing.assert_allclose(result.as_numpy(contract.GRID_TENSOR), expected[:1], atol=1e-4)


@pytest.mark.triton
def test_concurrent_requests_bad_ones_leave_the_others_correct(server, good_request) -> None:
    """Good and bad requests in flight together: the classifier's dynamic batcher may group
    the good ones; each bad one fails alone (the tiler, max_batch_size 0, sees one request
    per execute, so it can never batch a bad request with a good one)."""
    import tritonclient.grpc.aio as aioclient
    from tritonclient.utils import InferenceServerException

    regions, mask, expected = good_request
    cases = [(regions[i % 2 : i % 2 + 1], mask[i % 2 : i % 2 + 1], i % 2) for i in range(4)]
    bad = (np.zeros((1, 352, 352, 3), np.uint8), np.zeros((1, 3, 3), bool), None)
    cases = [cases[0], bad, cases[1], bad, cases[2], cases[3]]

    async def run_all() -> list:
        client = aioclient.InferenceServerClient(server.grpc_url)
        try:
            calls = [
                client.infer(contract.ENSEMBLE_MODEL, _ensemble_inputs(aioclient, r, m))
                for r, m, _ in cases
            ]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(run_all())
    for (_, _, index), result in zip(cases, results, strict=True):
        if index is None:
            assert isinstance(result, InferenceServerException)
            assert "no cell is true" in str(result)
        else:
            assert not isinstance(result, BaseException), result
            grid = result.as_numpy(contract.GRID_TENSOR)
            np.testing.assert_allclose(grid, expected[index : index + 1], atol=1e-4)


@pytest.mark.triton
def test_classifier_dynamic_batching_splits_outputs(server, exported_repository) -> None:
    """Concurrent direct classifier requests of different sizes come back in their shapes."""
    import tritonclient.grpc.aio as aioclient

    from wsi_tumor.export.parity import onnx_probabilities

    rng = np.random.default_rng(2)
    batches = [rng.uniform(-1, 1, (n, 3, 224, 224)).astype(np.float32) for n in (1, 3, 2)]

    async def run_all() -> list:
        client = aioclient.InferenceServerClient(server.grpc_url)
        try:
            calls = []
            for batch in batches:
                tensor = aioclient.InferInput(contract.PATCHES_TENSOR, list(batch.shape), "FP32")
                tensor.set_data_from_numpy(batch)
                calls.append(client.infer(contract.CLASSIFIER_MODEL, [tensor]))
            return await asyncio.gather(*calls)
        finally:
            await client.close()

    for batch, result in zip(batches, asyncio.run(run_all()), strict=True):
        expected = onnx_probabilities(exported_repository.onnx_path, batch)
        np.testing.assert_allclose(
            result.as_numpy(contract.PROBABILITIES_TENSOR), expected, atol=1e-5
        )


@pytest.mark.slow
@pytest.mark.triton
def test_perf_analyzer_measures_every_model(server, tmp_path: Path) -> None:
    from wsi_bench.perf_analyzer import detector_requests, run_perf_analyzer, write_input_data

    common = {"request_count": 4}
    classifier = run_perf_analyzer(
        contract.CLASSIFIER_MODEL,
        server.grpc_url,
        batch_size=2,
        report=tmp_path / "c.csv",
        **common,
    )
    data = write_input_data(tmp_path / "d.json", detector_requests(None, regions=1, cells=3))
    detector = run_perf_analyzer(
        contract.ENSEMBLE_MODEL,
        server.grpc_url,
        input_data=data,
        patches_per_inference=3,
        report=tmp_path / "d.csv",
        **common,
    )
    side = contract.region_size(contract.DENSE_MIN_CELLS)
    dense_data = write_input_data(
        tmp_path / "dense.json",
        detector_requests(None, regions=1, cells=contract.DENSE_MIN_CELLS, batched=True),
    )
    dense = run_perf_analyzer(
        contract.DENSE_MODEL,
        server.grpc_url,
        batch_size=2,
        input_data=dense_data,
        patches_per_inference=3,
        shapes=(
            f"{contract.REGIONS_TENSOR}:{side},{side},3",
            f"{contract.CELL_MASK_TENSOR}:{contract.DENSE_MIN_CELLS},{contract.DENSE_MIN_CELLS}",
        ),
        report=tmp_path / "dense.csv",
        **common,
    )
    for result in (classifier, detector, dense):
        assert result.inferences_per_s > 0 and result.patches_per_s > 0
        assert 0 < result.p50_ms <= result.p99_ms


# --- the dense model on the real server -------------------------------------------------------
def _dense_regions(cells: int, count: int = 2, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Real H&E regions of k = ``cells`` (the 1101 px sample reflected where k needs more)."""
    import tifffile

    image = tifffile.imread(REAL_HE)[..., :3]
    size = contract.region_size(cells)
    if size > min(image.shape[:2]):
        pad = size - min(image.shape[:2])
        image = np.pad(image, ((0, pad), (0, pad), (0, 0)), mode="reflect")
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, [image.shape[0] - size + 1, image.shape[1] - size + 1], (count, 2))
    regions = np.stack([image[y : y + size, x : x + size] for y, x in corners]).astype(np.uint8)
    return regions, rng.random((count, cells, cells)) < 0.6


def _pytorch_dense(checkpoint: Path, regions: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from wsi_tumor.export.parity import torch_dense
    from wsi_tumor.models.checkpoint import load_model

    return torch_dense(load_model(checkpoint), regions, mask)


@pytest.mark.triton
@pytest.mark.parametrize("cells", [contract.DENSE_MIN_CELLS, 16])
def test_dense_model_equals_the_pytorch_fully_convolutional_pass(
    server, exported_repository, cells
) -> None:
    import tritonclient.grpc as grpcclient

    regions, mask = _dense_regions(cells)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    result = client.infer(contract.DENSE_MODEL, _ensemble_inputs(grpcclient, regions, mask))
    grid = result.as_numpy(contract.GRID_TENSOR)
    assert grid is not None and grid.shape == mask.shape
    expected = _pytorch_dense(exported_repository.checkpoint, regions, mask)
    np.testing.assert_allclose(grid, expected, atol=1e-4)
    assert np.all(grid[~mask] == 0) and np.all(grid[mask] > 0)


DENSE_BAD_REQUESTS = [
    ("side not 224 + (k-1)*64", np.zeros((1, 700, 700, 3), np.uint8), np.ones((1, 8, 8), bool),
     "not 224 + (k - 1) * 64"),
    ("float regions", np.zeros((1, 352, 352, 3), np.float32), np.ones((1, 3, 3), bool),
     "expects 'UINT8'"),
    ("mask shape", np.zeros((1, 352, 352, 3), np.uint8), np.ones((1, 4, 4), bool),
     "cell_mask: shape must be [N, k, k] = [1, 3, 3]"),
    ("k below the model's range", np.zeros((1, 288, 288, 3), np.uint8), np.ones((1, 2, 2), bool),
     "takes k from 3"),
]  # fmt: skip


@pytest.mark.triton
def test_dense_bad_requests_get_invalid_arg_while_good_ones_are_answered(
    server, exported_repository
) -> None:
    """Bad requests mixed with good ones of two sizes, all in flight together."""
    import tritonclient.grpc.aio as aioclient
    from tritonclient.utils import InferenceServerException

    goods = [_dense_regions(cells, count=1, seed=cells) for cells in (3, 8, 3)]
    cases: list[tuple] = []
    for good, bad in zip(goods, DENSE_BAD_REQUESTS, strict=False):
        cases += [("good", *good, None), bad]
    cases.append(DENSE_BAD_REQUESTS[-1])

    async def run_all() -> list:
        client = aioclient.InferenceServerClient(server.grpc_url)
        try:
            calls = [
                client.infer(contract.DENSE_MODEL, _ensemble_inputs(aioclient, r, m))
                for _, r, m, _ in cases
            ]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.close()

    for (case, regions, mask, message), result in zip(cases, asyncio.run(run_all()), strict=True):
        if message is None:
            assert not isinstance(result, BaseException), result
            expected = _pytorch_dense(exported_repository.checkpoint, regions, mask)
            np.testing.assert_allclose(result.as_numpy(contract.GRID_TENSOR), expected, atol=1e-4)
        else:
            assert isinstance(result, InferenceServerException), case
            assert message in str(result), f"{case}: {result}"
            assert result.status() == "StatusCode.INVALID_ARGUMENT"


def test_wire_bytes_per_patch_for_k8_regions() -> None:
    from wsi_bench.perf_analyzer import wire_bytes_per_patch

    wire = wire_bytes_per_patch(8, tissue_fraction=1.0)
    assert wire["region_uint8"] == (672 * 672 * 3 + 64) / 64
    assert wire["patch_float32"] == 4 * wire["patch_uint8"] == 4 * 224 * 224 * 3
