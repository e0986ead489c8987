"""Fast logic tests of the client's geometry: mask cells -> regions -> map (no server)."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_tumor import contract
from wsi_tumor.client.endpoints import Encoded, endpoint_for_mode
from wsi_tumor.client.grid import Region, batched, patch_centres, place_grid, plan_regions
from wsi_tumor.errors import ConfigError


def random_mask(rows: int, cols: int, seed: int, fraction: float = 0.3) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, cols)) < fraction


@pytest.mark.parametrize(("rows", "cols", "cells"), [(13, 29, 8), (8, 8, 8), (5, 3, 4), (17, 9, 1)])
def test_every_tissue_cell_is_covered_exactly_once(rows: int, cols: int, cells: int) -> None:
    mask = random_mask(rows, cols, seed=rows * cols)
    coverage = np.zeros((rows + cells, cols + cells), dtype=int)
    regions = plan_regions(mask, cells)
    for region in regions:
        assert region.cell_mask.shape == (cells, cells)
        assert region.col0 % cells == 0 and region.row0 % cells == 0
        assert region.patches > 0, "blocks without tissue are skipped"
        window = coverage[region.row0 : region.row0 + cells, region.col0 : region.col0 + cells]
        window += region.cell_mask
    np.testing.assert_array_equal(coverage[:rows, :cols], mask.astype(int))
    assert coverage[rows:].sum() == 0 and coverage[:, cols:].sum() == 0
    assert sum(region.patches for region in regions) == mask.sum()


def test_blocks_without_tissue_are_skipped_and_order_is_row_major() -> None:
    mask = np.zeros((24, 24), dtype=bool)
    mask[2, 20] = mask[10, 3] = mask[23, 23] = True
    regions = plan_regions(mask, 8)
    assert [(r.col0, r.row0) for r in regions] == [(16, 0), (0, 8), (16, 16)]
    assert regions[0].cell_mask[2, 4] and regions[0].patches == 1


def test_region_origin_and_size_follow_the_contract() -> None:
    region = Region(col0=16, row0=8, cell_mask=np.ones((8, 8), dtype=bool))
    assert region.origin == contract.cell_patch_origin(16, 8)
    assert region.size == (contract.region_size(8),) * 2
    # the patch of cell (col0 + c, row0 + r) sits at offset (c, r) * stride in the region
    for c, r in [(0, 0), (3, 5), (7, 7)]:
        x, y = contract.cell_patch_origin(16 + c, 8 + r)
        assert (x - region.origin[0], y - region.origin[1]) == (
            c * contract.PATCH_STRIDE,
            r * contract.PATCH_STRIDE,
        )
    # the last patch ends exactly at the region's far edge
    last_x = contract.cell_patch_origin(23, 8)[0] + contract.PATCH_SIZE
    assert last_x == region.origin[0] + region.size[0]


def test_patch_centres_are_monai_locations_x_is_column() -> None:
    mask = np.zeros((3, 5), dtype=bool)
    mask[0, 4] = mask[2, 1] = True
    stride = contract.PATCH_STRIDE
    np.testing.assert_array_equal(
        patch_centres(mask), [[4.5 * stride, 0.5 * stride], [1.5 * stride, 2.5 * stride]]
    )
    for (x, y), (row, col) in zip(patch_centres(mask), np.argwhere(mask), strict=True):
        ox, oy = contract.cell_patch_origin(int(col), int(row))
        assert (ox + contract.PATCH_SIZE // 2, oy + contract.PATCH_SIZE // 2) == (x, y)


def test_place_grid_keeps_orientation_rows_y_cols_x() -> None:
    """An asymmetric mask: each cell's value encodes its (row, col); the map must match."""
    rows, cols, k = 11, 19, 4
    mask = np.zeros((rows, cols), dtype=bool)
    mask[1:4, 12:19] = True  # a wide band in the top right
    mask[9, 0] = True  # one cell bottom left
    prob_map = np.zeros((rows, cols), dtype=np.float32)
    for region in plan_regions(mask, k):
        rr, cc = np.mgrid[region.row0 : region.row0 + k, region.col0 : region.col0 + k]
        grid = np.where(region.cell_mask, (rr * 100 + cc) / 10000, 0).astype(np.float32)
        place_grid(prob_map, region, grid)
    expected = np.where(mask, (np.mgrid[:rows, :cols][0] * 100 + np.mgrid[:rows, :cols][1]), 0)
    np.testing.assert_allclose(prob_map, expected / 10000, atol=1e-7)
    assert prob_map[9, 0] == pytest.approx(0.09) and prob_map[0, 9] == 0


def test_place_grid_writes_only_true_cells() -> None:
    prob_map = np.full((4, 4), -1.0, dtype=np.float32)
    cell_mask = np.zeros((4, 4), dtype=bool)
    cell_mask[1, 2] = True
    place_grid(prob_map, Region(0, 0, cell_mask), np.full((4, 4), 0.7, dtype=np.float32))
    assert prob_map[1, 2] == pytest.approx(0.7)
    assert (prob_map == -1).sum() == 15


def test_batched_and_bad_arguments() -> None:
    regions = plan_regions(np.ones((16, 40), dtype=bool), 8)
    assert [len(b) for b in batched(regions, 4)] == [4, 4, 2]
    with pytest.raises(ConfigError, match="regions-per-request"):
        list(batched(regions, 0))
    with pytest.raises(ConfigError, match="region-cells"):
        plan_regions(np.ones((4, 4), dtype=bool), 0)
    with pytest.raises(ConfigError, match="2-D"):
        plan_regions(np.ones((4, 4, 3), dtype=bool), 2)


# --- regions read from a VirtualSlide give the patches of the MONAI locations ------------------
class EnsembleStandIn:
    """Duck-typed TritonTransport: the real tiler and assembler around a numpy 'classifier'."""

    endpoint = endpoint_for_mode("exact")

    def __init__(self) -> None:
        self.retries = 0
        self.requests = 0
        rng = np.random.default_rng(0)
        self.weights = rng.normal(size=(3, contract.PATCH_SIZE, contract.PATCH_SIZE))

    def classify(self, patches: np.ndarray) -> np.ndarray:
        """A position-sensitive score: a shifted patch scores differently."""
        logits = np.einsum("pchw,chw->p", patches.astype(np.float64), self.weights) / 5000
        return (1 / (1 + np.exp(-logits))).astype(np.float32)[:, None]

    async def infer(self, request: Encoded, cell_mask: np.ndarray) -> np.ndarray:
        from wsi_tumor.serving.tiling import assemble_grid, tile_regions

        inputs = request.inputs
        image = np.frombuffer(inputs[0]._get_content(), np.uint8).reshape(inputs[0].shape())
        mask = np.frombuffer(inputs[1]._get_content(), np.bool_).reshape(inputs[1].shape())
        regions, cells = cell_mask.shape[:2]
        assert image.shape == (regions, contract.region_size(cells), contract.region_size(cells), 3)
        np.testing.assert_array_equal(mask, cell_mask)
        self.requests += 1
        return assemble_grid(self.classify(tile_regions(image, mask)), mask)


@pytest.mark.parametrize("cells", [8, 3])
def test_streamed_map_equals_per_patch_reads_on_a_virtual_slide(cells: int) -> None:
    import asyncio

    from reference import read_patch
    from wsi_tumor.client.stream import stream_slide
    from wsi_tumor.slide import VirtualSlide

    height, width = 700, 1100  # not multiples of the stride: partial edge cells
    image = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    slide = VirtualSlide(image, mpp=0.25)
    rows, cols = -(-height // contract.PATCH_STRIDE), -(-width // contract.PATCH_STRIDE)
    mask = np.zeros((rows, cols), dtype=bool)
    mask[0, :] = True  # top edge: patches hang over the slide (filled white)
    mask[2:6, cols - 3 :] = True  # right edge, asymmetric
    mask[rows - 1, 1] = True  # bottom-left corner
    ensemble = EnsembleStandIn()
    regions = plan_regions(mask, cells)
    prob_map, stats = asyncio.run(
        stream_slide(
            slide,
            regions,
            (rows, cols),
            ensemble,  # type: ignore[arg-type]
            readers=2,
            inflight=3,
            regions_per_request=2,
            progress=None,
        )
    )
    expected = np.zeros((rows, cols), dtype=np.float32)
    for row, col in np.argwhere(mask):
        expected[row, col] = ensemble.classify(read_patch(slide, int(col), int(row))[None])[0, 0]
    np.testing.assert_array_equal(prob_map, expected)
    assert stats.patches == mask.sum() and stats.regions == len(regions)
    assert stats.requests == ensemble.requests == -(-len(regions) // 2)
    assert stats.peak_inflight <= 3


def test_a_failed_request_fails_the_slide_with_its_own_error() -> None:
    import asyncio

    from wsi_tumor.client.stream import stream_slide
    from wsi_tumor.errors import ServerError
    from wsi_tumor.slide import VirtualSlide

    class FailingSecond(EnsembleStandIn):
        async def infer(self, request: Encoded, cell_mask: np.ndarray) -> np.ndarray:
            if self.requests == 1:
                raise ServerError("127.0.0.1:1: inference failed: boom")
            return await super().infer(request, cell_mask)

    slide = VirtualSlide(np.full((512, 1024, 3), 128, dtype=np.uint8))
    regions = plan_regions(np.ones((8, 16), dtype=bool), 2)
    with pytest.raises(ServerError, match="boom"):
        asyncio.run(
            stream_slide(
                slide,
                regions,
                (8, 16),
                FailingSecond(),  # type: ignore[arg-type]
                readers=2,
                inflight=2,
                regions_per_request=1,
            )
        )


def test_dense_plan_bounds_and_splits_sparse_blocks_and_covers_every_cell_once() -> None:
    """A full block stays whole, a sparse one becomes the squares bounding its tissue."""
    from wsi_tumor.client.grid import plan_dense_regions

    mask = np.zeros((40, 70), dtype=bool)
    mask[:32, :32] = True  # one full k = 32 block
    mask[3, 40] = mask[30, 60] = True  # two lone cells 28 cells apart in the next block
    mask[35:40, 5:9] = True  # a 5 x 4 strip below the full block
    regions = plan_dense_regions(mask, 32, 8)
    covered = np.zeros_like(mask, dtype=int)
    for region in regions:
        k = region.cells
        block = covered[region.row0 : region.row0 + k, region.col0 : region.col0 + k]
        block += region.cell_mask[: block.shape[0], : block.shape[1]]
    np.testing.assert_array_equal(covered, mask.astype(int))
    # the lone cells: two k = 3 squares (the smallest the model takes), not one of k = 28
    assert [(r.cells, r.col0, r.row0) for r in regions] == [
        (32, 0, 0),
        (5, 5, 35),
        (3, 40, 3),
        (3, 60, 30),
    ]
    pixels = sum(contract.region_size(r.cells) ** 2 for r in regions)
    assert pixels < sum(contract.region_size(32) ** 2 for _ in plan_regions(mask, 32))
    # k = 3 blocks are never shrunk below the model's smallest k, nor any block grown past k
    assert {r.cells for r in plan_dense_regions(mask, 3, 8)} == {3}
    assert {r.cells for r in plan_dense_regions(mask, 15, 8)} == {15, 3}


def test_batched_keeps_one_k_per_request() -> None:
    regions = [Region(0, 0, np.ones((k, k), bool)) for k in (16, 16, 16, 8, 8)]
    assert [[r.cells for r in b] for b in batched(regions, 2)] == [[16, 16], [16], [8, 8]]
