"""Stream one slide's regions through the ensemble and assemble the probability map.

Three stages overlap:

1. a pool of ``readers`` threads reads each request's regions at level 0 (one read per
   region) and serialises the tensors with the transport's endpoint;
2. the event loop sends the request with ``tritonclient.grpc.aio`` and awaits the answer
   (many requests are on the wire at once, spread over the pool's servers; transient
   errors are retried, on another server when there is one);
3. the answer's k x k grids are written into the mask-level map.

A semaphore of ``inflight`` permits is taken before a request is read and given back when
its grids are in the map, so at most ``inflight * regions_per_request`` regions are in
memory whatever the slide size. A request that fails after its retries fails the slide; a
finished request is never sent again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.client.endpoints import Encoded, Endpoint
from wsi_tumor.client.grid import Region, batched, place_grid
from wsi_tumor.client.pool import ServerPool
from wsi_tumor.slide.base import SlideReader

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
"""Called on the event loop with the number of patches a finished request carried."""


@dataclass
class StreamStats:
    """Counters and timings of one slide's streaming phase.

    Attributes:
        patches: Patches classified (true cells sent).
        regions: Regions read and sent.
        requests: Requests answered.
        read_s: Reader-thread seconds spent reading regions (summed over threads).
        serialise_s: Reader-thread seconds spent building the request tensors (summed).
        bytes_sent: Tensor payload bytes sent (request inputs, without gRPC framing).
        server_s: Seconds requests spent on the wire and in the server (summed).
        wall_s: Wall-clock seconds of the whole streaming phase.
        retries: Transient failures retried.
        peak_inflight: Most requests held at once.
        held: Requests in the window now.
        damaged: Regions left out because tiles under them are damaged (cell position,
            cells, what is wrong).
    """

    patches: int = 0
    regions: int = 0
    requests: int = 0
    read_s: float = 0.0
    serialise_s: float = 0.0
    bytes_sent: int = 0
    server_s: float = 0.0
    wall_s: float = 0.0
    retries: int = 0
    peak_inflight: int = 0
    held: int = 0
    damaged: list[dict[str, object]] = field(default_factory=list)

    @property
    def damaged_cells(self) -> int:
        """Tissue cells left out of the map because their region's tiles are damaged."""
        return sum(int(d["cells"]) for d in self.damaged)  # type: ignore[call-overload]

    def hold(self) -> None:
        """A request was admitted to the window."""
        self.held += 1
        self.peak_inflight = max(self.peak_inflight, self.held)

    def release(self) -> None:
        """A request left the window (answered or failed)."""
        self.held -= 1


@dataclass(frozen=True)
class ReadRequest:
    """One request, read and serialised by a reader thread.

    Attributes:
        encoded: The serialised tensors; None when every region of it is damaged.
        cell_mask: BOOL [N, k, k] of the request's regions (all False for a damaged one).
        read_s: Seconds reading the regions.
        serialise_s: Seconds building the tensors.
        damaged: Per region left out: its position, tissue cells and the tile problems.
    """

    encoded: Encoded | None
    cell_mask: npt.NDArray[np.bool_]
    read_s: float
    serialise_s: float
    damaged: list[dict[str, object]]


def read_request(slide: SlideReader, regions: Sequence[Region], endpoint: Endpoint) -> ReadRequest:
    """Read the regions of one request at level 0 and serialise them with ``endpoint``.

    Args:
        slide: An open slide.
        regions: The request's regions (same k).
        endpoint: Builds the request's tensors.
    """
    start = time.perf_counter()
    k = regions[0].cells
    side = contract.region_size(k)
    pixels = np.zeros((len(regions), side, side, contract.CHANNELS), dtype=np.uint8)
    masks = np.stack([region.cell_mask for region in regions])
    damaged: list[dict[str, object]] = []
    for i, region in enumerate(regions):
        problems = slide.damage(region.origin, region.size, contract.INFERENCE_LEVEL)
        if problems:
            log.warning(
                "%s: region at cell (%d, %d) left out: %s",
                slide.path,
                region.col0,
                region.row0,
                "; ".join(problems[:3]),
            )
            damaged.append(
                {
                    "col": region.col0,
                    "row": region.row0,
                    "cells": region.patches,
                    "problems": problems[:3],
                }
            )
            masks[i] = False
            continue
        pixels[i] = slide.read_region(region.origin, region.size, contract.INFERENCE_LEVEL)
    read = time.perf_counter()
    encoded = endpoint.encode(pixels, masks) if masks.any() else None
    return ReadRequest(encoded, masks, read - start, time.perf_counter() - read, damaged)


async def stream_slide(
    slide: SlideReader,
    regions: Sequence[Region],
    map_shape: tuple[int, int],
    transport: ServerPool,
    *,
    readers: int,
    inflight: int,
    regions_per_request: int,
    progress: Progress | None = None,
) -> tuple[npt.NDArray[np.float32], StreamStats]:
    """Classify every region of a slide through the ensemble.

    Args:
        slide: An open slide (``read_region`` must be thread-safe).
        regions: The slide's regions (see :func:`wsi_tumor.client.grid.plan_regions`).
        map_shape: (rows, cols) of the mask-level map.
        transport: The started server pool.
        readers: Reader threads.
        inflight: Requests held at once (reading or on the wire).
        regions_per_request: Regions per request.
        progress: Called with each finished request's patch count.

    Returns:
        The float32 (rows, cols) map (0 off tissue) and the phase's statistics.

    Raises:
        ServerError: a request failed after its retries (in-flight requests are cancelled).
        SlideError: a region could not be read.
    """
    prob_map = np.zeros(map_shape, dtype=np.float32)
    stats = StreamStats()
    window = asyncio.Semaphore(inflight)
    loop = asyncio.get_running_loop()
    retries_before = transport.retries
    endpoint = transport.endpoint
    start = time.perf_counter()

    async def one_request(batch: Sequence[Region]) -> None:
        try:
            request = await loop.run_in_executor(pool, read_request, slide, batch, endpoint)
            stats.read_s += request.read_s
            stats.serialise_s += request.serialise_s
            stats.damaged += request.damaged
            patches = int(np.count_nonzero(request.cell_mask))
            if request.encoded is not None:
                stats.bytes_sent += request.encoded.nbytes
                sent = time.perf_counter()
                grids = await transport.infer(request.encoded, request.cell_mask)
                stats.server_s += time.perf_counter() - sent
                for region, grid, mask in zip(batch, grids, request.cell_mask, strict=True):
                    if mask.any():
                        place_grid(prob_map, region, grid)
                stats.requests += 1
            del request
            stats.patches += patches
            stats.regions += len(batch)
            log.debug(
                "request %d done: %d regions, %d patches", stats.requests, len(batch), patches
            )
            if progress is not None:
                progress(patches)
        finally:
            stats.release()
            window.release()

    with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="wsi-read") as pool:
        try:
            async with asyncio.TaskGroup() as group:
                for batch in batched(regions, regions_per_request):
                    await window.acquire()
                    stats.hold()
                    group.create_task(one_request(batch))
        except BaseExceptionGroup as group_error:
            # Surface the first real failure (the others are its cancellations).
            first = group_error.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
    stats.wall_s = time.perf_counter() - start
    stats.retries = transport.retries - retries_before
    return prob_map, stats
