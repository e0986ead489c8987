"""perf_analyzer over ``tumor_classifier`` and ``tumor_detector`` at matched patches/request.

The detector's requests are real regions of the benchmark slide with a cell mask of the
slide's own tissue fraction (its mean true cells per occupied k x k region), so one request
of n regions carries n * t patches; the classifier is measured at exactly those batch sizes,
which makes the two models' patches/s directly comparable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.bench.resources import wait_idle
from wsi_tumor.errors import ServerError
from wsi_tumor.serving.perf import (
    PerfResult,
    detector_requests,
    run_perf_analyzer,
    write_input_data,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPlan:
    """What to measure.

    Attributes:
        regions: Regions per detector request (e.g. 1 and 4).
        concurrency: Requests in flight.
        cells: k.
        tissue_fraction: Share of a region's cells that are tissue.
        measurement_ms: Shortest measurement window.
        window_patches: Patches one window holds at least (count_windows mode), so a window
            lasts several seconds whatever the request size.
        stability_percent: perf_analyzer ``-s``.
        max_trials: perf_analyzer ``-r``.
        request_count: Fixed request count instead of a stability search (quick runs).
    """

    regions: Sequence[int] = (1, 4)
    concurrency: Sequence[int] = (1, 2)
    cells: int = contract.REGION_CELLS
    tissue_fraction: float = 0.3
    measurement_ms: int = 4000
    window_patches: int = 320
    stability_percent: int = 20
    max_trials: int = 5
    request_count: int | None = None

    @property
    def true_cells(self) -> int:
        """True mask cells per detector region."""
        return max(1, round(self.tissue_fraction * self.cells * self.cells))

    def patches_per_request(self, regions: int) -> int:
        """Patches one detector request of ``regions`` regions carries."""
        return regions * self.true_cells


def measure(
    model: str, url: str, fallback_requests: int, server_pid: int | None, **kwargs: object
) -> PerfResult:
    """perf_analyzer on one point, once the server is idle; when no stable window is found
    (a busy machine), measure a fixed ``fallback_requests`` requests instead and log it."""
    if server_pid is not None:
        waited = wait_idle(server_pid)
        log.debug("server idle after %.1f s", waited)
    try:
        return run_perf_analyzer(model, url, **kwargs)  # type: ignore[arg-type]
    except ServerError as exc:
        if "stable" not in str(exc) or kwargs.get("request_count") is not None:
            raise
        log.warning("%s: no stable measurement; measuring %d requests", model, fallback_requests)
        kwargs["request_count"] = fallback_requests
        kwargs["window_requests"] = None
        if server_pid is not None:
            wait_idle(server_pid)
        return run_perf_analyzer(model, url, **kwargs)  # type: ignore[arg-type]


def run_sweep(
    url: str,
    plan: SweepPlan,
    workdir: Path,
    image: npt.NDArray[np.uint8] | None,
    server_pid: int | None = None,
) -> list[PerfResult]:
    """Measure the classifier at b = n * t and the ensemble at n regions, for each c."""
    results = []
    for regions in plan.regions:
        batch = plan.patches_per_request(regions)
        window = max(3, math.ceil(plan.window_patches / batch))
        data = write_input_data(
            workdir / f"detector_n{regions}.json",
            detector_requests(image, regions, plan.cells, plan.tissue_fraction),
        )
        for concurrency in plan.concurrency:
            common = {
                "concurrency": concurrency,
                "measurement_ms": plan.measurement_ms,
                "stability_percent": plan.stability_percent,
                "max_trials": plan.max_trials,
                "request_count": plan.request_count,
                "window_requests": window if plan.request_count is None else None,
            }
            results.append(
                measure(
                    contract.CLASSIFIER_MODEL,
                    url,
                    3 * window,
                    server_pid,
                    batch_size=batch,
                    report=workdir / f"classifier_b{batch}_c{concurrency}.csv",
                    **common,
                )
            )
            results.append(
                measure(
                    contract.ENSEMBLE_MODEL,
                    url,
                    3 * window,
                    server_pid,
                    input_data=data,
                    patches_per_inference=batch,
                    report=workdir / f"detector_n{regions}_c{concurrency}.csv",
                    **common,
                )
            )
            log.info(
                "b=%d c=%d: classifier %.1f, detector %.1f patches/s",
                batch,
                concurrency,
                results[-2].patches_per_s,
                results[-1].patches_per_s,
            )
    return results
