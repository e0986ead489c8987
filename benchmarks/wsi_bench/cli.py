"""``make bench``: perf_analyzer sweep and one slide six ways, written as a report.

Three phases: :func:`prepare` (a synthetic slide; a checkpoint: given, trained here with the
demo's recipe, or seeded; exported to an FP32 and an INT8 ``python-onnxruntime``
repository), :func:`measure` (the real ``tritonserver`` on the FP32 one: perf_analyzer over
``tumor_classifier``, ``tumor_detector`` and ``tumor_detector_dense``, then (a) the MONAI
PyTorch baseline, (b) ``wsi-infer --mode exact``, (c) client-cut patches and (d)
``wsi-infer --mode dense``; then a server on the INT8 one: the same sweep, (e) exact and
(f) dense mode, see :mod:`wsi_bench.int8`) and :func:`report` (the exact ways' maps must
agree within 1e-4, the dense and INT8 maps' agreement is measured; results.json, report.md
and throughput.png).

Exit codes: 0 done (targets may be missed: see the report), 1 the exact maps disagree or a
step failed, 2 bad flags.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from wsi_bench import BenchError
from wsi_bench.prepare import Prepared, prepare
from wsi_tumor import contract
from wsi_tumor.commandline import EXIT_OK, make_parser, run_command
from wsi_tumor.export.calibration import DEFAULT_PATCHES, DEFAULT_REGIONS
from wsi_tumor.fileio import parse_int_list, write_json, write_text

log = logging.getLogger(__name__)

CHART_NAME = "throughput.png"
EXACT_WAYS = ("a", "b", "c")
"""Ways that compute MONAI's exact map (they must agree within the tolerance)."""


def build_parser() -> argparse.ArgumentParser:
    """Flags of the benchmark."""
    parser = make_parser("run_benchmarks", __doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--size", type=int, default=4096, help="synthetic slide side (px)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="weights to measure (default: --weights)"
    )
    parser.add_argument(
        "--weights",
        choices=("trained", "seeded"),
        default="trained",
        help="without --checkpoint: train one here with the demo's recipe (INT8 vs FP32 "
        "agreement needs trained weights), or torch.manual_seed(0) random-init weights",
    )
    parser.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also export, serve and measure the INT8 repository (ways e and f)",
    )
    parser.add_argument(
        "--calibration-patches", type=int, default=DEFAULT_PATCHES,
        help="INT8 calibration patches (wsi-export's default)",
    )  # fmt: skip
    parser.add_argument(
        "--calibration-regions", type=int, default=DEFAULT_REGIONS,
        help="INT8 calibration regions (wsi-export's default)",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None, help="keep work files here")
    parser.add_argument(
        "--regions", type=parse_int_list, default=[1, 4], help="exact regions/request"
    )
    parser.add_argument(
        "--dense-regions", type=parse_int_list, default=[1, 4], help="dense regions/request"
    )
    parser.add_argument("--concurrency", type=parse_int_list, default=[1, 2])
    parser.add_argument("--measurement-ms", type=int, default=4000)
    parser.add_argument("--window-patches", type=int, default=320)
    parser.add_argument(
        "--request-count", type=int, default=None, help="fixed perf requests (quick runs)"
    )
    parser.add_argument("--readers", type=int, default=2, help="client reader threads")
    parser.add_argument("--inflight", type=int, default=4, help="client requests in flight")
    parser.add_argument(
        "--dense-inflight",
        type=int,
        default=2,
        help="dense-mode requests in flight: a queue of large regions slows the co-located "
        "CPU server's compute (bench slide: 5.2 s at 2 vs 6.5 s at 4)",
    )
    parser.add_argument("--baseline-batch", type=int, default=32)
    parser.add_argument("--baseline-workers", type=int, default=1)
    parser.add_argument("--skip-perf", action="store_true", help="only the end-to-end ways")
    parser.add_argument("--notes", type=Path, default=None, help="markdown lines to append")
    return parser


def measure(args: argparse.Namespace, prepared: Prepared, workdir: Path) -> dict[str, Any]:
    """Run perf_analyzer and the four FP32 ways on one server, then the INT8 server's sweep
    and two ways (when exported); return the raw measurements."""
    from wsi_bench.int8 import int8_setup, measure_int8
    from wsi_bench.resources import TreeSampler
    from wsi_bench.sweep import SweepPlan

    plan = SweepPlan(
        regions=args.regions,
        concurrency=args.concurrency,
        dense_regions=args.dense_regions,
        tissue_fraction=prepared.geometry["tissue_fraction"],
        measurement_ms=args.measurement_ms,
        window_patches=args.window_patches,
        request_count=args.request_count,
    )
    log.info("slide %s: %s", prepared.slide.name, prepared.geometry)
    with TreeSampler() as sampler:
        machine, perf, ways = _measure_fp32(args, prepared, workdir, sampler, plan)
        int8 = None
        if prepared.int8_repository is not None:
            int8 = int8_setup(prepared.int8_repository, prepared.repository)
            perf_int8, ways_int8 = measure_int8(args, prepared, workdir, sampler, plan)
            perf, ways = perf + perf_int8, ways + ways_int8
    return {"machine": machine, "plan": plan, "perf": perf, "ways": ways, "int8": int8}


def _measure_fp32(
    args: argparse.Namespace, prepared: Prepared, workdir: Path, sampler: Any, plan: Any
) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """The FP32 server: machine description, perf_analyzer sweep, ways (a) to (d)."""
    from wsi_bench.machine import describe_machine
    from wsi_bench.resources import wait_idle
    from wsi_bench.sweep import run_sweep
    from wsi_bench.ways import run_baseline_way, run_client_ways
    from wsi_tumor.serving.local_server import LocalTritonServer

    server = LocalTritonServer(prepared.repository, log_path=workdir / "tritonserver.log")
    with server:
        if server.pid is None:
            raise BenchError("tritonserver has no process id")
        sampler.watch("server", server.pid)
        machine = describe_machine(server.http_url)
        perf = (
            []
            if args.skip_perf
            else run_sweep(server.grpc_url, plan, workdir, prepared.crop, server.pid)
        )
        wait_idle(server.pid)
        log.info("way (a): MONAI baseline")
        ways = [
            run_baseline_way(
                prepared.slide,
                prepared.checkpoint,
                workdir,
                sampler,
                batch_size=args.baseline_batch,
                workers=args.baseline_workers,
                threads=os.cpu_count() or 1,
            )
        ]
        ways += run_client_ways("bcd", prepared.slide, server, workdir, sampler, args)
    return machine, perf, ways


def report(
    args: argparse.Namespace,
    command: str,
    prepared: Prepared,
    measured: dict[str, Any],
    started: float,
    date: str,
) -> BenchError | None:
    """Check the maps, write results.json, report.md and the chart; return a failure."""
    from wsi_bench.report import (
        check_agreement,
        dense_agreement,
        evaluate_targets,
        format_diffs,
        render_chart,
        render_markdown,
    )
    from wsi_bench.ways import load_map

    ways, plan, perf = measured["ways"], measured["plan"], measured["perf"]
    maps = {way.key: load_map(way) for way in ways}
    failure: BenchError | None = None
    exact = {key: maps[key] for key in EXACT_WAYS if key in maps}
    try:
        agreement = check_agreement(exact)
    except BenchError as exc:
        failure = exc
        agreement = {
            f"{k1}-{k2}": float(np.max(np.abs(exact[k1] - exact[k2])))
            for k1, k2 in (("a", "b"), ("a", "c"), ("b", "c"))
            if exact[k1].shape == exact[k2].shape
        }
    print(f"exact maps: max |diff| {format_diffs(agreement)}")
    dense = dense_agreement(maps["b"], maps["d"], {w.key: w for w in ways})
    print(f"dense vs exact: {dense}")
    int8 = measured.get("int8")
    if int8 is not None:
        from wsi_bench.int8 import int8_agreement

        int8 = {**int8, "agreement": int8_agreement(maps)}
        print(f"INT8 vs FP32: {int8['agreement']}")
    perf_rows = [
        {**asdict(r), "patches_per_request": round(r.patches_per_s / r.inferences_per_s
         * (r.batch_size or 1)) if r.inferences_per_s else float(r.batch_size)}
        for r in perf
    ]  # fmt: skip
    k, dense_k = contract.REGION_CELLS, contract.DENSE_REGION_CELLS
    results: dict[str, Any] = {
        "date": date,
        "command": command,
        "machine": measured["machine"],
        "slide": {
            **prepared.geometry,
            "description": (
                f"synthetic {prepared.geometry['width']} x {prepared.geometry['height']} px "
                f"slide, seed {args.seed}: {prepared.geometry['tissue_cells']} tissue cells in "
                f"{prepared.geometry['regions']} regions of {k} x {k} "
                f"({prepared.geometry['dense_regions']} dense regions of k <= {dense_k})"
            ),
        },
        "setup": _setup_lines(args, measured["machine"], plan, prepared.weights),
        "weights": prepared.weights,
        "models": {
            "classifier": contract.CLASSIFIER_MODEL,
            "detector": contract.ENSEMBLE_MODEL,
            "dense": contract.DENSE_MODEL,
        },
        "perf": perf_rows,
        "client_batch": float(plan.patches_per_request(max(args.regions, default=1))),
        "ways": [way.to_json() for way in ways],
        "agreement": agreement,
        "dense_agreement": dense,
        "int8": int8,
        "notes": args.notes.read_text().splitlines() if args.notes else [],
    }
    results["duration_s"] = round(time.perf_counter() - started, 1)
    targets = evaluate_targets(results)
    results["targets"] = [{**asdict(t), "passed": t.passed, "verdict": t.verdict} for t in targets]
    render_chart(results, args.out / CHART_NAME)
    write_json(args.out / "results.json", results)
    write_text(args.out / "report.md", render_markdown(results, targets, CHART_NAME))
    for t in targets:
        print(f"{t.verdict:14} {t.measured:6.2f} (>= {t.threshold}) {t.name}")
    print(f"report: {args.out / 'report.md'} ({results['duration_s']:.0f} s)")
    return failure


def _setup_lines(
    args: argparse.Namespace, machine: dict[str, Any], plan: Any, weights: str
) -> list[str]:
    k, dense_k = plan.cells, plan.dense_cells
    int8 = (
        "; the same checkpoint exported again with `--precision int8` (QDQ, calibrated on the "
        "training slides of a synthetic training set, not on the bench slide) and served by a "
        "second server after the first, for ways (e) and (f) and its own perf_analyzer rows"
        if args.int8
        else ""
    )
    return [
        f"model: ResNet18-FCN, {weights}, exported to ONNX twice (the patch classifier and "
        "the dense whole-region graph); the server runs both in the Python backend with ONNX "
        f"Runtime (`wsi-export --runtime python-onnxruntime`){int8}",
        f"server: real tritonserver {machine['versions']['tritonserver']} started by "
        "LocalTritonServer, gRPC on localhost, same server for every measurement",
        f"perf_analyzer: exact requests are n regions of k = {k} with {plan.true_cells()} of "
        f"{k * k} cells true (the slide's mean tissue fraction {plan.tissue_fraction:.2f}); the "
        f"classifier runs at the same n x {plan.true_cells()} patches per request; the dense "
        f"model gets regions of k = {dense_k} with {plan.true_cells(dense_k)} true cells, "
        f"batched by -b; count windows of >= {plan.window_patches} patches and >= "
        f"{plan.measurement_ms} ms, stability {plan.stability_percent} %",
        f"client: {args.readers} reader threads, {args.inflight} requests in flight "
        f"({args.dense_inflight} in dense mode, whose regions are up to 16x larger: a deeper "
        "queue of them slows the server's compute on this shared CPU), the most regions per "
        "request each model takes",
    ]


def run(args: argparse.Namespace, command: str) -> int:
    """The whole benchmark; returns the exit code."""
    started = time.perf_counter()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="wsi-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        prepared = prepare(args, workdir)
        measured = measure(args, prepared, workdir)
        failure = report(args, command, prepared, measured, started, date)
    if failure is not None:
        raise failure
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 on failure (maps disagree, a step failed)."""
    # SIGTERM unwinds like an error, so the server and its stubs are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    shown = list(sys.argv[1:] if argv is None else argv)
    command = "make bench" if not shown else "benchmarks/run_benchmarks.py " + shlex.join(shown)
    for name in ("wsi_tumor.export",):
        logging.getLogger(name).setLevel(logging.WARNING)
    return run_command(
        "run_benchmarks",
        build_parser(),
        lambda args: run(args, command),
        argv,
        log_format="%(asctime)s %(name)s: %(message)s",
    )
