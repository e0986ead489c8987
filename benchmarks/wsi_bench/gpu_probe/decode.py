"""The ``slide`` stage (a JPEG-tiled TIFF with shared JPEGTables, read back by the product's
torchvision reader) and tile decode on the CPU cores and the device (``decode_*``)."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from wsi_bench.budget import left
from wsi_bench.gpu_probe.network import sync
from wsi_bench.gpu_probe.plan import DECODE_TOLERANCE, Json
from wsi_bench.gpu_probe.state import Block, Context
from wsi_bench.jpeg_slide import jpeg_page, synthetic_he, write_jpeg_tiff
from wsi_tumor.slide import inspect_slide
from wsi_tumor.slide.jpeg import jpeg_segments
from wsi_tumor.slide.torchvision_reader import TorchvisionSlide, assemble_tiles, decode_tiles

logger = logging.getLogger(__name__)


def decode_block(block: Block, device: str = "cpu") -> torch.Tensor:
    """The block decoded and assembled: HWC uint8 on ``device``."""
    return assemble_tiles(decode_tiles(block.streams, device), block.grid)


def stage_slide(ctx: Context, deadline: float) -> str:
    """Write the synthetic slide region with shared JPEGTables, read its tiles back through
    the product's torchvision reader and decode them once on the CPU: the canvas the network
    stages cut regions from."""
    path = ctx.scratch / "synthetic_slide.tif"
    page = jpeg_page(synthetic_he(ctx.plan.canvas, ctx.seed), ctx.plan.tile)
    write_jpeg_tiff(path, [page])
    slide = TorchvisionSlide(inspect_slide(path))
    with slide:
        table = slide.tile_table(0)
        streams = slide.tile_streams(0, range(table.across * table.down))
    tiles = [s for s in streams if s is not None]
    tile = (table.tile_width, table.tile_height)
    block = Block(tile, (table.across, table.down), tiles, int(table.counts.sum()))
    ctx.block, ctx.canvas = block, decode_block(block).numpy()
    shared = sum(0xDB not in {m for m, _ in jpeg_segments(t)} for t in page.tiles)
    bits = 8 * block.stored_bytes / (block.megapixels * 1e6)
    ctx.probe.slide = {"path": str(path), "tile": tile[0], "tiles": len(tiles),
                       "grid": block.grid, "megapixels": block.megapixels,
                       "bits_per_pixel": bits, "tiles_with_shared_tables": shared,
                       "subsampling": page.subsampling}  # fmt: skip
    return "ok"


def _timed(block: Block, decode: Callable[[], int], stop: float, limit: int) -> float:
    """MP/s of ``decode`` (it returns the tiles it decoded) run once, then until the monotonic
    ``stop`` or ``limit`` tiles."""
    tiles, t0 = 0, time.perf_counter()
    while tiles == 0 or (time.monotonic() < stop and tiles < limit):
        tiles += decode()
    return tiles * block.tile[0] * block.tile[1] / 1e6 / (time.perf_counter() - t0)


def stage_decode_cpu(ctx: Context, deadline: float) -> str:
    """Tile decode on the CPU: one thread, then one thread per core (torchvision's decoder
    releases the GIL, so threads scale; the report gives the scaling)."""
    block = ctx.slide()[0]
    limit = ctx.plan.decode_passes * len(block.streams)
    chunks = [block.streams[i : i + 8] for i in range(0, len(block.streams), 8)]
    decode_tiles(chunks[0])  # warm-up
    cycle = itertools.cycle(chunks)
    stop = time.monotonic() + max(0.1, left(deadline) / 3)
    single = _timed(block, lambda: len(decode_tiles(next(cycle))), stop, limit)
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:

        def one_pass() -> int:
            return sum(len(tiles) for tiles in pool.map(decode_tiles, chunks))

        threaded = _timed(block, one_pass, deadline, limit)
    rates = {"one_thread_mp_s": single, "all_threads_mp_s": threaded}
    ctx.probe.decode["cpu"] = {"threads": workers, **rates, "scaling": threaded / single}
    logger.info("decode CPU: %.0f MP/s on 1 thread, %.0f MP/s on %d", single, threaded, workers)
    return "ok"


def stage_decode_device(ctx: Context, deadline: float) -> str:
    """Batched tile decode on the device (nvJPEG on CUDA), checked against the CPU's pixels."""
    block, plan, device = ctx.slide()[0], ctx.plan, ctx.device
    got, want = decode_tiles(block.streams[:16], device.type), decode_tiles(block.streams[:16])
    diffs = [(g.cpu().int() - w.int()).abs().float() for g, w in zip(got, want, strict=True)]
    mean_diff, max_diff = (
        float(torch.stack([d.mean() for d in diffs]).mean()),
        int(max(d.max() for d in diffs)),
    )
    shapes = all(g.shape == w.shape for g, w in zip(got, want, strict=True))
    what = f"{len(got)} tiles, mean |diff| in 8-bit levels (max {max_diff})"
    ctx.probe.add_check({"name": "decode: device vs CPU pixels", "what": what, "value": mean_diff,
                         "max_abs": max_diff, "tolerance": DECODE_TOLERANCE,
                         "passed": shapes and mean_diff <= DECODE_TOLERANCE})  # fmt: skip
    rows: list[Json] = []
    ctx.probe.decode["device"] = {"type": device.type, "batches": rows}
    per_batch = left(deadline) / len(plan.decode_batches)
    for batch in plan.decode_batches:
        if rows and left(deadline) <= 0:  # the first batch size is always measured
            return "partial"
        streams = [block.streams[i % len(block.streams)] for i in range(batch)]

        def decode(streams: list[bytes] = streams) -> int:
            count = len(decode_tiles(streams, device.type))
            sync(device)
            return count

        decode()  # warm-up at this size
        stop = min(deadline, time.monotonic() + per_batch)
        mp_s = _timed(block, decode, stop, max(batch, plan.decode_passes * len(block.streams)))
        rows.append({"batch": batch, "mp_s": mp_s})
        logger.info("decode %s batch %d: %.0f MP/s", device.type, batch, mp_s)
    return "ok"
