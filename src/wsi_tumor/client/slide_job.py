"""One slide from file to outputs: mask, regions, streamed inference, map, candidates."""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from wsi_tumor import contract
from wsi_tumor.client.config import InferConfig
from wsi_tumor.client.grid import plan_regions
from wsi_tumor.client.heatmap import heatmap_size, read_thumbnail, render_overlay
from wsi_tumor.client.outputs import (
    SlideOutputs,
    detections_geojson,
    write_csv,
    write_json,
    write_npy,
    write_png,
)
from wsi_tumor.client.stream import StreamStats, stream_slide
from wsi_tumor.client.transport import ModelInfo, TritonTransport
from wsi_tumor.errors import MissingResolutionError, NoTissueError
from wsi_tumor.slide.base import SlideReader

log = logging.getLogger(__name__)


class SlideJob:
    """Compute and write the outputs of one slide.

    Args:
        slide: Slide file.
        config: The run's configuration.
    """

    def __init__(self, slide: Path, config: InferConfig) -> None:
        self.slide = slide
        self.config = config
        self.outputs = SlideOutputs(config.out, slide.stem)

    async def run(
        self,
        transport: TritonTransport,
        info: ModelInfo,
        regions_per_request: int,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Process the slide; write ``<stem>.json`` last and return its content.

        Raises:
            SlideError: the slide cannot be opened or read, or has no tissue.
            ServerError: a request failed after its retries.
        """
        from wsi_tumor.slide import open_slide, tissue_mask

        config = self.config
        self.outputs.invalidate()
        start = time.perf_counter()
        slide = await asyncio.to_thread(open_slide, self.slide, reader=config.reader)
        with slide:
            mask = await asyncio.to_thread(tissue_mask, slide, contract.MASK_LEVEL)
            mask = np.asarray(mask, dtype=bool)
            if not mask.any():
                raise NoTissueError(f"{self.slide}: the tissue mask is empty")
            mask_s = time.perf_counter() - start
            write_png(self.outputs.mask_png, np.where(mask, 255, 0).astype(np.uint8))
            regions = plan_regions(mask, config.region_cells)
            tissue_cells = int(mask.sum())
            log.info(
                "%s: %d x %d level-0 px, mask %s, %d tissue cells in %d regions",
                self.slide,
                *slide.level_dimensions[0],
                mask.shape,
                tissue_cells,
                len(regions),
            )
            with tqdm(
                total=tissue_cells,
                desc=self.slide.stem,
                unit="patch",
                position=1,
                leave=False,
                disable=config.quiet,
            ) as bar:

                def advance(patches: int) -> None:
                    bar.update(patches)
                    if progress is not None:
                        progress(patches)

                prob_map, stats = await stream_slide(
                    slide,
                    regions,
                    (int(mask.shape[0]), int(mask.shape[1])),
                    transport,
                    readers=config.readers,
                    inflight=config.inflight,
                    regions_per_request=regions_per_request,
                    progress=advance,
                )
            outputs_start = time.perf_counter()
            detections = await asyncio.to_thread(self._write_maps, slide, prob_map, mask)
            report = self._report(
                slide,
                info,
                transport.url,
                mask,
                len(regions),
                stats,
                detections,
                mask_s,
                outputs_start,
                start,
            )
        write_json(self.outputs.report, report)
        return report

    def _write_maps(
        self, slide: SlideReader, prob_map: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.float64]:
        from wsi_tumor.evaluation.nms import nms

        write_npy(self.outputs.prob_map, prob_map)
        level0 = slide.level_dimensions[0]
        thumbnail = read_thumbnail(slide, heatmap_size(level0))
        write_png(self.outputs.heatmap_png, render_overlay(thumbnail, prob_map, mask, level0))
        detections = nms(
            prob_map,
            contract.MASK_LEVEL,
            radius=self.config.nms_radius,
            threshold=self.config.nms_threshold,
            size=level0,
        )
        write_csv(self.outputs.csv, detections)
        write_json(self.outputs.geojson, detections_geojson(detections))
        return detections

    def _report(
        self,
        slide: SlideReader,
        info: ModelInfo,
        url: str,
        mask: npt.NDArray[np.bool_],
        regions: int,
        stats: StreamStats,
        detections: npt.NDArray[np.float64],
        mask_s: float,
        outputs_start: float,
        start: float,
    ) -> dict[str, Any]:
        now = time.perf_counter()
        try:
            mpp: list[float] | None = [float(v) for v in slide.mpp]
        except MissingResolutionError:
            mpp = None
        return {
            "slide": str(self.slide),
            "level0_size": list(slide.level_dimensions[0]),
            "mpp": mpp,
            "mask_level": contract.MASK_LEVEL,
            "map_shape": list(mask.shape),
            "model": {"name": info.name, "versions": list(info.versions), "url": url},
            "counts": {
                "tissue_cells": int(mask.sum()),
                "patches": stats.patches,
                "regions": regions,
                "requests": stats.requests,
                "detections": len(detections),
                "retries": stats.retries,
                "peak_inflight": stats.peak_inflight,
            },
            "timings_s": {
                "mask": round(mask_s, 3),
                "read": round(stats.read_s, 3),
                "serialise": round(stats.serialise_s, 3),
                "server": round(stats.server_s, 3),
                "stream": round(stats.wall_s, 3),
                "outputs": round(now - outputs_start, 3),
                "total": round(now - start, 3),
            },
            "patches_per_s": round(stats.patches / stats.wall_s, 2) if stats.wall_s else 0.0,
            "bytes_sent": stats.bytes_sent,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "outputs": {
                "prob_map": self.outputs.prob_map.name,
                "tissue_mask": self.outputs.mask_png.name,
                "heatmap": self.outputs.heatmap_png.name,
                "detections_csv": self.outputs.csv.name,
                "detections_geojson": self.outputs.geojson.name,
            },
            "config": self.config.to_json(),
        }
