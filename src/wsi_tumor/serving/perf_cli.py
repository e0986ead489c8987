"""``benchmarks/perf_models.py``: perf_analyzer over the classifier and the ensemble."""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from wsi_tumor import contract
from wsi_tumor.errors import WsiTumorError, report_error
from wsi_tumor.serving.perf import (
    TYPICAL_TISSUE_FRACTION,
    PerfResult,
    detector_requests,
    run_perf_analyzer,
    wire_bytes_per_patch,
    write_input_data,
)

log = logging.getLogger(__name__)


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t]


def build_parser() -> argparse.ArgumentParser:
    """Flags of the perf benchmark."""
    parser = argparse.ArgumentParser(prog="perf_models", description=__doc__)
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path("model_repository"),
        help="repository to serve locally when --url is not given",
    )
    parser.add_argument("--url", default=None, help="gRPC host:port of a running server")
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 16], help="classifier -b values")
    parser.add_argument("--concurrency", type=_ints, default=[1, 2])
    parser.add_argument(
        "--regions", type=_ints, default=[1, 4], help="regions per ensemble request"
    )
    parser.add_argument("--cells", type=int, default=contract.REGION_CELLS)
    parser.add_argument("--tissue-fraction", type=float, default=TYPICAL_TISSUE_FRACTION)
    parser.add_argument("--image", type=Path, default=None, help="H&E image for regions")
    parser.add_argument("--measurement-ms", type=int, default=3000)
    parser.add_argument(
        "--stability",
        type=int,
        default=50,
        help="perf_analyzer -s: allowed %% spread between measurement windows",
    )
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None, help="write results as JSON")
    return parser


def sweep(args: argparse.Namespace, url: str, workdir: Path) -> list[PerfResult]:
    """Measure the classifier (batch x concurrency) and the ensemble (regions x concurrency)."""
    import numpy as np
    import tifffile

    results = []
    for concurrency in args.concurrency:
        for batch in args.batch_sizes:
            results.append(
                run_perf_analyzer(
                    contract.CLASSIFIER_MODEL,
                    url,
                    batch_size=batch,
                    concurrency=concurrency,
                    report=workdir / f"classifier_b{batch}_c{concurrency}.csv",
                    measurement_ms=args.measurement_ms,
                    stability_percent=args.stability,
                    max_trials=args.max_trials,
                )
            )
    image = None
    if args.image is not None:
        image = np.asarray(tifffile.imread(args.image))[..., :3].astype(np.uint8)
    true_cells = max(1, round(args.tissue_fraction * args.cells**2))
    for regions in args.regions:
        data = write_input_data(
            workdir / f"detector_n{regions}.json",
            detector_requests(image, regions, args.cells, args.tissue_fraction),
        )
        for concurrency in args.concurrency:
            results.append(
                run_perf_analyzer(
                    contract.ENSEMBLE_MODEL,
                    url,
                    concurrency=concurrency,
                    input_data=data,
                    patches_per_inference=regions * true_cells,
                    report=workdir / f"detector_n{regions}_c{concurrency}.csv",
                    measurement_ms=args.measurement_ms,
                    stability_percent=args.stability,
                    max_trials=args.max_trials,
                )
            )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep (starting a local server unless --url) and print a table."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with tempfile.TemporaryDirectory(prefix="perf-") as tmp:
            if args.url:
                results = sweep(args, args.url, Path(tmp))
            else:
                from wsi_tumor.serving.local_server import LocalTritonServer

                with LocalTritonServer(args.repository) as server:
                    results = sweep(args, server.grpc_url, Path(tmp))
    except WsiTumorError as exc:
        return report_error("perf_models", exc)
    print(
        f"{'model':18} {'b':>3} {'c':>3} {'infer/s':>9} {'patches/s':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8}"
    )
    for r in results:
        print(
            f"{r.model:18} {r.batch_size:3d} {r.concurrency:3d} {r.inferences_per_s:9.2f} "
            f"{r.patches_per_s:10.1f} {r.p50_ms:8.1f} {r.p99_ms:8.1f}"
        )
    wire = wire_bytes_per_patch(args.cells, args.tissue_fraction)
    print("bytes per patch on the wire: " + ", ".join(f"{k} {v:,.0f}" for k, v in wire.items()))
    if args.output:
        payload = {"results": [asdict(r) for r in results], "bytes_per_patch": wire}
        args.output.write_text(json.dumps(payload, indent=2))
    return 0
