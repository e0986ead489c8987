"""perf_analyzer over the served models at matched patches per request.

The detectors' requests are real regions of the benchmark slide with a cell mask of the
slide's own tissue fraction (its mean true cells per occupied k x k region), so one exact
request of n regions carries n * t patches; the classifier is measured at exactly those
batch sizes, which makes the two models' patches/s directly comparable. The dense model is
measured at its own k (regions batched by ``-b``), in cells (patches) per second.

Standalone (a running server, or one started on ``--repository``)::

    python -m wsi_bench.sweep --repository model_repository --regions 1,4
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_bench.perf_analyzer import (
    TYPICAL_TISSUE_FRACTION,
    PerfResult,
    detector_requests,
    run_perf_analyzer,
    wire_bytes_per_patch,
    write_input_data,
)
from wsi_bench.resources import wait_idle
from wsi_tumor import contract
from wsi_tumor.commandline import EXIT_OK, make_parser, run_command
from wsi_tumor.errors import ServerError
from wsi_tumor.fileio import parse_int_list, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPlan:
    """What to measure.

    Attributes:
        regions: Regions per exact-detector request (e.g. 1 and 4).
        concurrency: Requests in flight.
        cells: k of the exact mode.
        dense_cells: k of the dense mode.
        dense_regions: Regions per dense request (``-b``); empty skips the dense model.
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
    dense_cells: int = contract.DENSE_REGION_CELLS
    dense_regions: Sequence[int] = (1,)
    tissue_fraction: float = TYPICAL_TISSUE_FRACTION
    measurement_ms: int = 4000
    window_patches: int = 320
    stability_percent: int = 20
    max_trials: int = 5
    request_count: int | None = None

    def true_cells(self, cells: int | None = None) -> int:
        """True mask cells per region of k = ``cells`` (default: the exact mode's k)."""
        k = self.cells if cells is None else cells
        return max(1, round(self.tissue_fraction * k * k))

    def patches_per_request(self, regions: int) -> int:
        """Patches one exact-detector request of ``regions`` regions carries."""
        return regions * self.true_cells()


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


def _window(plan: SweepPlan, patches: int, concurrency: int) -> dict[str, Any]:
    window = max(3, math.ceil(plan.window_patches / patches))
    return {
        "concurrency": concurrency,
        "measurement_ms": plan.measurement_ms,
        "stability_percent": plan.stability_percent,
        "max_trials": plan.max_trials,
        "request_count": plan.request_count,
        "window_requests": window if plan.request_count is None else None,
    }


def run_sweep(
    url: str,
    plan: SweepPlan,
    workdir: Path,
    image: npt.NDArray[np.uint8] | None,
    server_pid: int | None = None,
) -> list[PerfResult]:
    """Classifier at b = n * t and ensemble at n regions, then the dense model, for each c."""
    results = []
    for regions in plan.regions:
        batch = plan.patches_per_request(regions)
        data = write_input_data(
            workdir / f"detector_n{regions}.json",
            detector_requests(image, regions, plan.cells, plan.tissue_fraction),
        )
        for concurrency in plan.concurrency:
            common = _window(plan, batch, concurrency)
            fallback = 3 * int(common["window_requests"] or 3)
            results.append(
                measure(
                    contract.CLASSIFIER_MODEL,
                    url,
                    fallback,
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
                    fallback,
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
    k = plan.dense_cells
    side = contract.region_size(k)
    true_cells = plan.true_cells(k)
    dense_data = write_input_data(
        workdir / f"dense_k{k}.json",
        detector_requests(image, 1, k, plan.tissue_fraction, batched=True),
    )
    for regions in plan.dense_regions:
        for concurrency in plan.concurrency:
            common = _window(plan, regions * true_cells, concurrency)
            results.append(
                measure(
                    contract.DENSE_MODEL,
                    url,
                    3 * int(common["window_requests"] or 3),
                    server_pid,
                    batch_size=regions,
                    input_data=dense_data,
                    patches_per_inference=true_cells,
                    shapes=(
                        f"{contract.REGIONS_TENSOR}:{side},{side},{contract.CHANNELS}",
                        f"{contract.CELL_MASK_TENSOR}:{k},{k}",
                    ),
                    report=workdir / f"dense_k{k}_b{regions}_c{concurrency}.csv",
                    **common,
                )
            )
            log.info(
                "dense k=%d b=%d c=%d: %.1f cells/s",
                k,
                regions,
                concurrency,
                results[-1].patches_per_s,
            )
    return results


def build_parser() -> argparse.ArgumentParser:
    """Flags of the standalone sweep."""
    parser = make_parser("wsi_bench.sweep", __doc__)
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path("model_repository"),
        help="repository to serve locally when --url is not given",
    )
    parser.add_argument("--url", default=None, help="gRPC host:port of a running server")
    parser.add_argument("--concurrency", type=parse_int_list, default=[1, 2])
    parser.add_argument(
        "--regions", type=parse_int_list, default=[1, 4], help="regions per exact request"
    )
    parser.add_argument(
        "--dense-regions", type=parse_int_list, default=[1], help="regions per dense request"
    )
    parser.add_argument("--tissue-fraction", type=float, default=TYPICAL_TISSUE_FRACTION)
    parser.add_argument("--image", type=Path, default=None, help="H&E image for regions")
    parser.add_argument("--measurement-ms", type=int, default=3000)
    parser.add_argument("--output", type=Path, default=None, help="write results as JSON")
    return parser


def _standalone(args: argparse.Namespace) -> int:
    import tifffile

    plan = SweepPlan(
        regions=args.regions,
        concurrency=args.concurrency,
        dense_regions=args.dense_regions,
        tissue_fraction=args.tissue_fraction,
        measurement_ms=args.measurement_ms,
    )
    image = None
    if args.image is not None:
        image = np.asarray(tifffile.imread(args.image))[..., :3].astype(np.uint8)
    with tempfile.TemporaryDirectory(prefix="perf-") as tmp:
        if args.url:
            results = run_sweep(args.url, plan, Path(tmp), image)
        else:
            from wsi_tumor.serving.local_server import LocalTritonServer

            with LocalTritonServer(args.repository) as server:
                results = run_sweep(server.grpc_url, plan, Path(tmp), image, server.pid)
    print(
        f"{'model':22} {'b':>3} {'c':>3} {'infer/s':>9} {'patches/s':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8}"
    )
    for r in results:
        print(
            f"{r.model:22} {r.batch_size:3d} {r.concurrency:3d} {r.inferences_per_s:9.2f} "
            f"{r.patches_per_s:10.1f} {r.p50_ms:8.1f} {r.p99_ms:8.1f}"
        )
    wire = wire_bytes_per_patch(plan.cells, plan.tissue_fraction)
    print("bytes per patch on the wire: " + ", ".join(f"{k} {v:,.0f}" for k, v in wire.items()))
    if args.output:
        write_json(args.output, {"results": [asdict(r) for r in results], "bytes_per_patch": wire})
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep (starting a local server unless ``--url``) and print a table."""
    return run_command("wsi_bench.sweep", build_parser(), _standalone, argv)


if __name__ == "__main__":
    sys.exit(main())
