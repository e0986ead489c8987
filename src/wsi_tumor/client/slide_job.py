"""One slide from file to outputs: open, view at the model's resolution, mask, stream, write.

The slide is opened with the reader its format needs (``--reader auto``), viewed at the
resolution the served model was trained at (the repository's ``model_mpp`` parameter; a
slide within 10 % of it is read as it is, so MONAI's map stays exact), masked with MONAI's
tissue rule, streamed region by region, and written. The probability map is on the grid of
64 model-pixel cells; the lesion candidates (CSV, GeoJSON) are in the slide's own level-0
pixels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from wsi_tumor import contract
from wsi_tumor.client.config import InferConfig
from wsi_tumor.client.grid import plan_dense_regions, plan_regions
from wsi_tumor.client.heatmap import heatmap_size, read_thumbnail, render_overlay
from wsi_tumor.client.outputs import (
    SlideOutputs,
    detections_geojson,
    output_stem,
    write_csv,
    write_npy,
    write_png,
)
from wsi_tumor.client.pool import ServerPool, answered_delta
from wsi_tumor.client.stream import stream_slide
from wsi_tumor.client.transport import ModelInfo
from wsi_tumor.errors import NoTissueError
from wsi_tumor.fileio import peak_rss_mib, write_json
from wsi_tumor.slide.base import SlideReader
from wsi_tumor.slide.resolution import Resolution

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A slide opened at the model's resolution, with its mask and regions."""

    slide: SlideReader
    resolution: Resolution
    level0_size: tuple[int, int]
    mask: npt.NDArray[np.bool_]
    mask_s: float


class SlideJob:
    """Compute and write the outputs of one slide.

    Args:
        slide: Slide file (or DICOM folder).
        config: The run's configuration.
    """

    def __init__(self, slide: Path, config: InferConfig) -> None:
        self.slide = slide
        self.config = config
        self.outputs = SlideOutputs(config.out, output_stem(slide))
        self.reader: dict[str, object] | None = None
        """What opened the slide (reader, format, fallbacks), once it is open."""

    def prepare(self, model_mpp: float) -> Prepared:
        """Open the slide at the model's resolution and compute its tissue mask.

        Raises:
            SlideError: unreadable, no resolution (and no ``--mpp``), not brightfield,
                no tissue.
        """
        from wsi_tumor.slide import open_slide, tissue_mask
        from wsi_tumor.slide.resolution import at_model_resolution

        start = time.perf_counter()
        config = self.config
        source = open_slide(self.slide, reader=config.reader)
        self.reader = source.describe()
        try:
            level0_size = source.level_dimensions[0]
            slide, resolution = at_model_resolution(source, model_mpp, config.mpp)
            mask = np.asarray(
                tissue_mask(
                    slide,
                    contract.MASK_LEVEL,
                    rule=config.tissue_rule,
                    exclude_ink=config.exclude_ink,
                ),
                dtype=bool,
            )
            if not mask.any():
                raise NoTissueError(f"{self.slide}: the tissue mask is empty")
        except BaseException:
            source.close()
            raise
        return Prepared(slide, resolution, level0_size, mask, time.perf_counter() - start)

    async def run(
        self,
        transport: ServerPool,
        info: ModelInfo,
        regions_per_request: int,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Process the slide; write ``<stem>.json`` last and return its content.

        Raises:
            SlideError: the slide cannot be opened or read, or has no tissue.
            ServerError: a request failed after its retries.
        """
        config = self.config
        self.outputs.invalidate()
        start = time.perf_counter()
        prepared = await asyncio.to_thread(self.prepare, info.model_mpp)
        answered_before = transport.answered()
        slide, mask = prepared.slide, prepared.mask
        with slide:
            write_png(self.outputs.mask_png, np.where(mask, 255, 0).astype(np.uint8))
            plan = plan_dense_regions if config.mode == "dense" else plan_regions
            regions = plan(mask, config.cells)
            tissue_cells = int(mask.sum())
            log.info(
                "%s: %d x %d level-0 px, mask %s, %d tissue cells in %d regions",
                self.slide,
                *prepared.level0_size,
                mask.shape,
                tissue_cells,
                len(regions),
            )
            with tqdm(
                total=tissue_cells,
                desc=self.outputs.stem,
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
            detections = await asyncio.to_thread(self._write_maps, prepared, prob_map)
        cell_um = contract.PATCH_STRIDE * prepared.resolution.model_mpp
        scored = slide_classification(prob_map, cell_um, info)
        now = time.perf_counter()
        report = {
            "slide": str(self.slide),
            "level0_size": list(prepared.level0_size),
            "reader": self.reader,
            "resolution": prepared.resolution.to_json(),
            "mode": config.mode,
            "mask_level": contract.MASK_LEVEL,
            "map_shape": list(mask.shape),
            "map_cell_um": round(cell_um, 4),
            "tissue": {"rule": config.tissue_rule, "exclude_ink": config.exclude_ink},
            "slide_classifier": scored,
            "damaged": {
                "regions": len(stats.damaged),
                "cells": stats.damaged_cells,
                "left_out": stats.damaged,
            },
            "model": {
                "name": info.name,
                "versions": list(info.versions),
                "precision": info.precision,
            },
            "servers": answered_delta(answered_before, transport.answered()),
            "counts": {
                "tissue_cells": tissue_cells,
                "patches": stats.patches,
                "regions": len(regions),
                "regions_by_cells": {
                    str(k): n for k, n in sorted(Counter(r.cells for r in regions).items())
                },
                "regions_per_request": regions_per_request,
                "requests": stats.requests,
                "detections": len(detections),
                "retries": stats.retries,
                "peak_inflight": stats.peak_inflight,
            },
            "timings_s": {
                "mask": round(prepared.mask_s, 3),
                "read": round(stats.read_s, 3),
                "serialise": round(stats.serialise_s, 3),
                "server": round(stats.server_s, 3),
                "stream": round(stats.wall_s, 3),
                "outputs": round(now - outputs_start, 3),
                "total": round(now - start, 3),
            },
            "patches_per_s": round(stats.patches / stats.wall_s, 2) if stats.wall_s else 0.0,
            "bytes_sent": stats.bytes_sent,
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "outputs": {
                "prob_map": self.outputs.prob_map.name,
                "tissue_mask": self.outputs.mask_png.name,
                "heatmap": self.outputs.heatmap_png.name,
                "detections_csv": self.outputs.csv.name,
                "detections_geojson": self.outputs.geojson.name,
            },
            "checksums": self.outputs.checksums(),
            "config": config.to_json(),
        }
        write_json(self.outputs.report, report)
        return report

    def _write_maps(
        self, prepared: Prepared, prob_map: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float64]:
        """Write the map, heatmap and candidates; return the candidates (slide level 0)."""
        from wsi_tumor.evaluation.nms import nms

        slide, mask = prepared.slide, prepared.mask
        write_npy(self.outputs.prob_map, prob_map)
        view0 = slide.level_dimensions[0]
        thumbnail = read_thumbnail(slide, heatmap_size(view0))
        write_png(self.outputs.heatmap_png, render_overlay(thumbnail, prob_map, mask, view0))
        detections = nms(
            prob_map,
            contract.MASK_LEVEL,
            radius=self.config.nms_radius,
            threshold=self.config.nms_threshold,
            size=view0,
        )
        scale = prepared.resolution.slide_px_per_view_px
        if scale != 1.0:  # model pixels -> the slide's own level-0 pixels
            detections[:, 1:] = np.minimum(
                detections[:, 1:] * scale, np.asarray(prepared.level0_size, np.float64) - 1
            )
        write_csv(self.outputs.csv, detections)
        write_json(self.outputs.geojson, detections_geojson(detections))
        return detections


def slide_classification(
    prob_map: npt.NDArray[np.float32], cell_um: float, info: ModelInfo
) -> dict[str, Any]:
    """The slide's ``slide_classifier`` block: its map's features and, where the repository
    carries a fitted slide classifier, its tumour probability (else why there is none)."""
    from wsi_tumor.evaluation.slide_features import map_features

    features = map_features(prob_map, cell_um)
    classifier = info.slide_classifier
    if classifier is None:
        return {
            "probability": None,
            "reason": f"the model repository has no {contract.SLIDE_CLASSIFIER_FILE} (fit one "
            "with wsi-slide-classifier)",
            "map_max": features["max"],
            "features": features,
        }
    return {
        "probability": classifier.probability(features),
        "map_max": features["max"],
        "features": features,
        "scorer": {"features": list(classifier.features), "fitted_on": classifier.fitted_on},
    }
