"""The stages after the sweep: the Triton tiler's numpy cut (the exact path's CPU cap) and the
device pipeline (decode, assemble, dense network; serial, then with decode on its own thread).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from wsi_bench.gpu_probe import ProbeError
from wsi_bench.gpu_probe.budget import left
from wsi_bench.gpu_probe.decode import assemble, decode_tiles_device
from wsi_bench.gpu_probe.network import dense_forward, parse_variant, sync
from wsi_bench.gpu_probe.reference import cut_regions
from wsi_tumor import contract
from wsi_tumor.serving.tiling import tile_regions

if TYPE_CHECKING:
    from wsi_bench.gpu_probe.context import Context

logger = logging.getLogger(__name__)


def stage_tiler(ctx: Context, deadline: float) -> str:
    """The Triton tiler's numpy cut (FP32 CHW patches), one process: the exact path's cap."""
    _, canvas = ctx.slide()
    cells = contract.REGION_CELLS
    side = contract.region_size(cells)
    if side > min(canvas.shape[:2]):
        return "skipped: canvas smaller than one region"
    regions = cut_regions(canvas, [(0, 0), (canvas.shape[1] - side, canvas.shape[0] - side)], side)
    mask = np.ones((2, cells, cells), dtype=bool)
    calls, t0 = 0, time.perf_counter()
    while calls < 1 or (left(deadline) > 0 and calls < 50):
        patches = tile_regions(regions, mask, max_patches=mask.size)
        calls += 1
    seconds = time.perf_counter() - t0
    per_s = calls * mask.size / seconds
    bytes_per_patch = int(patches[0].nbytes)
    ctx.probe.tiler = {
        "patches_per_s_one_process": per_s,
        "bytes_per_patch": bytes_per_patch,
        "output_mb_s": per_s * bytes_per_patch / 1e6,
        "region_cells": cells,
    }
    logger.info("tiler: %.0f patches/s in one process (%d B per patch)", per_s, bytes_per_patch)
    return "ok"


def stage_pipeline(ctx: Context, deadline: float) -> str:
    """End to end on the device: decode the block's tiles, assemble, dense network; serially,
    then with decode on its own thread feeding the network."""
    tileset, _ = ctx.slide()
    _, nets = ctx.checked()
    probe, plan = ctx.probe, ctx.plan
    best = probe.best_row("dense", eager_only=True)
    if best is None:
        return "skipped: no passing dense variant"
    variant = parse_variant(best["variant"])
    cols, rows = tileset.grid
    height, width = rows * tileset.tile[1], cols * tileset.tile[0]

    def places(k: int) -> list[tuple[int, int]]:
        side, step = contract.region_size(k), k * contract.PATCH_STRIDE
        found = [
            (x, y)
            for y in range(0, height - side + 1, step)
            for x in range(0, width - side + 1, step)
        ]
        return found[: plan.pipeline_regions]

    # the k whose regions cover most of the block's cells
    cells = max((k for k, _ in plan.dense_shapes), key=lambda k: (len(places(k)) * k * k, k))
    side, positions = contract.region_size(cells), places(cells)
    if not positions:
        return "skipped: block smaller than one region"
    net = nets.network(variant)
    forward = dense_forward(net, variant)
    cells_done = len(positions) * cells * cells

    def network(decoded: list[torch.Tensor]) -> torch.Tensor:
        image = assemble(decoded, tileset.grid)
        batch = torch.stack([image[y : y + side, x : x + side] for x, y in positions])
        logits = forward(batch.contiguous())
        sync(nets.device)
        return logits

    # serial: decode, then the network, on one thread
    half = time.monotonic() + left(deadline) / 2
    passes, t0, logits = 0, time.perf_counter(), None
    while passes < 1 or (time.monotonic() < half and passes < 20):
        logits = network(decode_tiles_device(tileset.tiles, tileset.tables, nets.device))
        passes += 1
    serial = passes * cells_done / (time.perf_counter() - t0)
    assert logits is not None
    finite = bool(torch.isfinite(logits).all())
    # overlapped: a decode thread (nvJPEG's hardware engines on A100/H100-class GPUs, its own
    # CUDA stream) feeds the network thread through a queue of two decoded blocks
    blocks: queue.Queue[list[torch.Tensor] | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            while not stop.is_set():
                blocks.put(decode_tiles_device(tileset.tiles, tileset.tables, nets.device))
        finally:
            blocks.put(None)

    producer = threading.Thread(target=produce, name="gpu_probe-decode", daemon=True)
    overlapped_passes, t0 = 0, time.perf_counter()
    producer.start()
    try:
        while overlapped_passes < 2 or (left(deadline) > 0 and overlapped_passes < 40):
            decoded = blocks.get()
            if decoded is None:
                raise ProbeError("the decode thread stopped")
            logits = network(decoded)
            overlapped_passes += 1
        overlapped = overlapped_passes * cells_done / (time.perf_counter() - t0)
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                blocks.get(timeout=0.1)
    probe.pipeline = {
        "variant": variant.name,
        "cells": cells,
        "regions": len(positions),
        "serial_passes": passes,
        "serial_cells_per_s": serial,
        "overlapped_passes": overlapped_passes,
        "overlapped_cells_per_s": overlapped,
        "decoded_px_per_cell": tileset.megapixels * 1e6 / cells_done,
        "finite": finite and bool(torch.isfinite(logits).all()),
    }
    logger.info("pipeline: %.0f cells/s serial, %.0f overlapped", serial, overlapped)
    return "ok" if probe.pipeline["finite"] else "failed: non-finite logits"
