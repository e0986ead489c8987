"""Tile decode: raw tile bytes merged with the file's JPEGTables, decoded by torchvision
(libjpeg-turbo on the CPU, nvJPEG batched on CUDA); the ``decode_cpu`` and ``decode_device``
stages."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch
from torchvision.io import decode_jpeg

from wsi_bench.gpu_probe.budget import left
from wsi_bench.gpu_probe.checks import DECODE_TOLERANCE
from wsi_bench.gpu_probe.config import Json
from wsi_bench.gpu_probe.network import sync
from wsi_bench.gpu_probe.tiff_jpeg import merge_jpeg_tables

if TYPE_CHECKING:
    from wsi_bench.gpu_probe.context import Context

logger = logging.getLogger(__name__)


def _merged(tiles: Sequence[bytes], tables: bytes | None) -> list[torch.Tensor]:
    """Self-contained JPEG streams of raw tiles, as uint8 tensors (the decoder's input)."""
    return [
        torch.frombuffer(bytearray(merge_jpeg_tables(t, tables)), dtype=torch.uint8) for t in tiles
    ]


def decode_tiles_cpu(tiles: Sequence[bytes], tables: bytes | None) -> list[torch.Tensor]:
    """Raw tiles -> CHW uint8 RGB tensors on the CPU (libjpeg-turbo via torchvision)."""
    return [decode_jpeg(data) for data in _merged(tiles, tables)]


def decode_tiles_device(
    tiles: Sequence[bytes], tables: bytes | None, device: torch.device
) -> list[torch.Tensor]:
    """Raw tiles -> CHW uint8 RGB tensors on ``device`` (nvJPEG, batched, on CUDA)."""
    out = decode_jpeg(_merged(tiles, tables), device=device)
    return list(out) if isinstance(out, list) else [out]


def assemble(decoded: Sequence[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
    """Row-major CHW tiles of a (columns, rows) block -> one HWC uint8 image."""
    cols, rows = grid
    stacked = torch.stack(list(decoded))  # [rows*cols, 3, th, tw]
    _, c, th, tw = stacked.shape
    return (
        stacked.reshape(rows, cols, c, th, tw)
        .permute(0, 3, 1, 4, 2)
        .reshape(rows * th, cols * tw, c)
    )


def stage_decode_cpu(ctx: Context, deadline: float) -> str:
    """Tile decode on the CPU: one thread, then a pool of one thread per core (torchvision's
    decoder releases the GIL, so threads scale; the report gives the scaling)."""
    tileset, _ = ctx.slide()
    probe, plan = ctx.probe, ctx.plan
    tile_mp = tileset.tile[0] * tileset.tile[1] / 1e6
    tiles, tables = tileset.tiles, tileset.tables
    decode_tiles_cpu(tiles[:4], tables)  # warm-up
    stop = time.monotonic() + max(0.1, left(deadline) / 3)
    count, t0 = 0, time.perf_counter()
    while count < 8 or (time.monotonic() < stop and count < plan.decode_passes * len(tiles)):
        chunk = [tiles[(count + i) % len(tiles)] for i in range(8)]
        count += len(decode_tiles_cpu(chunk, tables))
    single = count * tile_mp / (time.perf_counter() - t0)
    workers = os.cpu_count() or 1
    chunks = [tiles[i : i + 8] for i in range(0, len(tiles), 8)]
    done, passes, t0 = 0, 0, time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        while passes < 1 or (left(deadline) > 0 and passes < plan.decode_passes):
            for decoded in pool.map(lambda c: decode_tiles_cpu(c, tables), chunks):
                done += len(decoded)
            passes += 1
    threaded = done * tile_mp / (time.perf_counter() - t0)
    probe.decode["cpu"] = {
        "threads": workers,
        "one_thread_mp_s": single,
        "all_threads_mp_s": threaded,
        "scaling": threaded / single,
        "tiles_decoded": count + done,
    }
    logger.info("decode CPU: %.0f MP/s on 1 thread, %.0f MP/s on %d", single, threaded, workers)
    return "ok"


def stage_decode_device(ctx: Context, deadline: float) -> str:
    """Batched tile decode on the device from raw bytes merged with the JPEG tables, checked
    against the CPU's pixels."""
    tileset, _ = ctx.slide()
    probe, plan, device = ctx.probe, ctx.plan, ctx.device
    tile_mp = tileset.tile[0] * tileset.tile[1] / 1e6
    tiles, tables = tileset.tiles, tileset.tables
    sample = tiles[:16]
    got = decode_tiles_device(sample, tables, device)  # warm-up: creates the decoder
    sync(device)
    want = decode_tiles_cpu(sample, tables)
    diffs = [(g.cpu().int() - w.int()).abs() for g, w in zip(got, want, strict=True)]
    mean_diff = float(torch.stack([d.float().mean() for d in diffs]).mean())
    max_diff = int(max(int(d.max()) for d in diffs))
    shapes_ok = all(g.shape == w.shape for g, w in zip(got, want, strict=True))
    probe.add_check(
        {
            "name": "decode: device vs CPU pixels",
            "what": f"{len(sample)} tiles, mean |diff| in 8-bit levels (max {max_diff})",
            "value": mean_diff,
            "max_abs": max_diff,
            "tolerance": DECODE_TOLERANCE,
            "passed": bool(shapes_ok and mean_diff <= DECODE_TOLERANCE),
        }
    )
    rows: list[Json] = []
    status = "ok"
    per_batch = left(deadline) / max(1, len(plan.decode_batches))
    for batch in plan.decode_batches:
        if rows and left(deadline) <= 0:  # the first batch size is always measured
            status = "partial"
            break
        batch_tiles = [tiles[i % len(tiles)] for i in range(batch)]
        decode_tiles_device(batch_tiles, tables, device)  # warm-up at this size
        sync(device)
        calls, t0 = 0, time.perf_counter()
        stop = min(deadline, time.monotonic() + per_batch)
        limit = max(1, plan.decode_passes * len(tiles) // batch)
        while calls < 1 or (time.monotonic() < stop and calls < limit):
            decode_tiles_device(batch_tiles, tables, device)
            calls += 1
            sync(device)
        seconds = time.perf_counter() - t0
        rows.append({"batch": batch, "calls": calls, "mp_s": calls * batch * tile_mp / seconds})
        logger.info("decode %s batch %d: %.0f MP/s", device.type, batch, rows[-1]["mp_s"])
    probe.decode["device"] = {"type": device.type, "batches": rows}
    return status
