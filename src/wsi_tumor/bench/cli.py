"""``make bench``: perf_analyzer sweep and one slide three ways, written as a report.

Steps: generate a synthetic slide, export a seeded (or given) checkpoint to a
``python-onnxruntime`` repository, start the real ``tritonserver`` on it, run perf_analyzer
over ``tumor_classifier`` and ``tumor_detector``, then (a) the MONAI PyTorch baseline,
(b) ``wsi-infer`` through the ensemble and (c) ``wsi-infer --endpoint classifier``; check
the three maps agree within 1e-4 and write results.json, report.md and throughput.png.

Exit codes: 0 done (targets may be missed: see the report), 1 the maps disagree or a step
failed.
"""

from __future__ import annotations

import argparse
import json
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

from wsi_tumor import contract
from wsi_tumor.bench import BenchError
from wsi_tumor.errors import WsiTumorError

log = logging.getLogger(__name__)

CHART_NAME = "throughput.png"


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t]


def build_parser() -> argparse.ArgumentParser:
    """Flags of the benchmark."""
    parser = argparse.ArgumentParser(prog="run_benchmarks", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--size", type=int, default=4096, help="synthetic slide side (px)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="default: torch.manual_seed(0) weights"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep work files here")
    parser.add_argument("--regions", type=_ints, default=[1, 4], help="detector regions/request")
    parser.add_argument("--concurrency", type=_ints, default=[1, 2])
    parser.add_argument("--measurement-ms", type=int, default=4000)
    parser.add_argument("--window-patches", type=int, default=320)
    parser.add_argument(
        "--request-count", type=int, default=None, help="fixed perf requests (quick runs)"
    )
    parser.add_argument("--readers", type=int, default=2, help="client reader threads")
    parser.add_argument("--inflight", type=int, default=4, help="client requests in flight")
    parser.add_argument("--baseline-batch", type=int, default=32)
    parser.add_argument("--baseline-workers", type=int, default=1)
    parser.add_argument("--skip-perf", action="store_true", help="only the three ways")
    parser.add_argument("--notes", type=Path, default=None, help="markdown lines to append")
    return parser


def _seeded_checkpoint(path: Path) -> Path:
    import torch

    from wsi_tumor.models import build_model

    torch.manual_seed(0)
    torch.save({"model": build_model().state_dict(), "epoch": 0, "config": {"seed": 0}}, path)
    return path


def prepare(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path, Path]:
    """Synthetic slide, checkpoint and exported repository under ``workdir``."""
    from wsi_tumor.data.cli import main as synth_main
    from wsi_tumor.export.cli import ExportConfig, run_export

    data = workdir / "data"
    code = synth_main(
        [str(data), "--train", "1", "--valid", "0", "--test", "0", "--size", str(args.size),
         "--seed", str(args.seed), "--quiet"]
    )  # fmt: skip
    slides = sorted((data / "images").glob("*.tif"))
    if code != 0 or not slides:
        raise BenchError(f"wsi-synth failed ({code}) in {data}")
    checkpoint = args.checkpoint or _seeded_checkpoint(workdir / "checkpoint.pt")
    repository = workdir / "model_repository"
    run_export(
        ExportConfig(
            checkpoint=checkpoint,
            repository=repository,
            runtime="python-onnxruntime",
            parity_patches=8,
        )
    )
    return slides[0], checkpoint, repository


def slide_geometry(slide_path: Path, cells: int) -> dict[str, Any]:
    """Tissue cells, regions and the mean tissue fraction of an occupied region."""
    from wsi_tumor.client.grid import plan_regions
    from wsi_tumor.slide import open_slide, tissue_mask

    with open_slide(slide_path) as slide:
        mask = np.asarray(tissue_mask(slide, contract.MASK_LEVEL), bool)
        regions = plan_regions(mask, cells)
        width, height = slide.level_dimensions[0]
        # A tissue-rich level-0 crop for the perf_analyzer detector requests.
        side = min(width, height, 2048)
        row, col = np.argwhere(mask).mean(axis=0)
        x = int(np.clip(col * contract.PATCH_STRIDE - side / 2, 0, width - side))
        y = int(np.clip(row * contract.PATCH_STRIDE - side / 2, 0, height - side))
        crop = slide.read_region((x, y), (side, side), contract.INFERENCE_LEVEL)
    fraction = float(mask.sum()) / (len(regions) * cells * cells)
    return {
        "width": width,
        "height": height,
        "tissue_cells": int(mask.sum()),
        "regions": len(regions),
        "tissue_fraction": round(fraction, 3),
        "crop": np.asarray(crop, np.uint8),
    }


def run(args: argparse.Namespace, command: str) -> int:
    """The whole benchmark; returns the exit code."""
    from wsi_tumor.bench.machine import describe_machine
    from wsi_tumor.bench.report import (
        check_agreement,
        evaluate_targets,
        format_diffs,
        render_chart,
        render_markdown,
    )
    from wsi_tumor.bench.resources import TreeSampler, wait_idle
    from wsi_tumor.bench.sweep import SweepPlan, run_sweep
    from wsi_tumor.bench.ways import load_map, run_baseline_way, run_client_way
    from wsi_tumor.serving.local_server import LocalTritonServer

    started = time.perf_counter()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="wsi-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        slide, checkpoint, repository = prepare(args, workdir)
        geometry = slide_geometry(slide, contract.REGION_CELLS)
        crop = geometry.pop("crop")
        plan = SweepPlan(
            regions=args.regions,
            concurrency=args.concurrency,
            tissue_fraction=geometry["tissue_fraction"],
            measurement_ms=args.measurement_ms,
            window_patches=args.window_patches,
            request_count=args.request_count,
        )
        log.info("slide %s: %s", slide.name, geometry)
        server = LocalTritonServer(repository, log_path=workdir / "tritonserver.log")
        with server, TreeSampler() as sampler:
            if server.pid is None:
                raise BenchError("tritonserver has no process id")
            sampler.watch("server", server.pid)
            machine = describe_machine(server.http_url)
            perf = (
                []
                if args.skip_perf
                else run_sweep(server.grpc_url, plan, workdir, crop, server.pid)
            )
            wait_idle(server.pid)
            log.info("way (a): MONAI baseline")
            a = run_baseline_way(
                slide,
                checkpoint,
                workdir,
                sampler,
                batch_size=args.baseline_batch,
                workers=args.baseline_workers,
                threads=os.cpu_count() or 1,
            )
            ways = [a]
            for key, endpoint in (("b", "detector"), ("c", "classifier")):
                wait_idle(server.pid)
                log.info("way (%s): wsi-infer --endpoint %s", key, endpoint)
                ways.append(
                    run_client_way(
                        key,
                        endpoint,
                        slide,
                        server.grpc_url,
                        server.pid,
                        workdir,
                        sampler,
                        readers=args.readers,
                        inflight=args.inflight,
                    )
                )
        maps = {way.key: load_map(way) for way in ways}
        failure: BenchError | None = None
        try:
            agreement = check_agreement(maps)
        except BenchError as exc:
            failure = exc
            agreement = {}
            for k1, k2 in (("a", "b"), ("a", "c"), ("b", "c")):
                if maps[k1].shape == maps[k2].shape:
                    agreement[f"{k1}-{k2}"] = float(np.max(np.abs(maps[k1] - maps[k2])))
        print(f"maps: max |diff| {format_diffs(agreement)}")
        perf_rows = [
            {**asdict(r), "patches_per_request": r.patches_per_s / r.inferences_per_s
             * (r.batch_size or 1) if r.inferences_per_s else float(r.batch_size)}
            for r in perf
        ]  # fmt: skip
        for row in perf_rows:
            row["patches_per_request"] = float(round(row["patches_per_request"]))
        regions_per_request = max(args.regions) if args.regions else 4
        results: dict[str, Any] = {
            "date": date,
            "command": command,
            "machine": machine,
            "slide": {
                **geometry,
                "description": (
                    f"synthetic {geometry['width']} x {geometry['height']} px slide, seed "
                    f"{args.seed}: {geometry['tissue_cells']} tissue cells in "
                    f"{geometry['regions']} regions of 8 x 8"
                ),
            },
            "setup": [
                f"model: ResNet18-FCN, "
                f"{'seeded random-init weights' if args.checkpoint is None else args.checkpoint}"
                ", exported to ONNX; the server runs it in the Python backend with ONNX Runtime "
                "(`wsi-export --runtime python-onnxruntime`)",
                f"server: real tritonserver {machine['versions']['tritonserver']} started by "
                "LocalTritonServer, gRPC on localhost, same server for every measurement",
                f"perf_analyzer: detector requests are n regions of k = 8 with "
                f"{plan.true_cells} of 64 cells true (the slide's mean tissue fraction "
                f"{plan.tissue_fraction:.2f}); the classifier runs at the same n x "
                f"{plan.true_cells} patches per request; count windows of >= "
                f"{plan.window_patches} patches and >= {plan.measurement_ms} ms, stability "
                f"{plan.stability_percent} %",
                f"client: {args.readers} reader threads, {args.inflight} requests in flight, "
                f"the most regions per request the ensemble takes (4 for k = 8)",
            ],
            "models": {
                "classifier": contract.CLASSIFIER_MODEL,
                "detector": contract.ENSEMBLE_MODEL,
            },
            "perf": perf_rows,
            "client_batch": float(plan.patches_per_request(regions_per_request)),
            "ways": [way.to_json() for way in ways],
            "agreement": agreement,
            "notes": args.notes.read_text().splitlines() if args.notes else [],
        }
        results["duration_s"] = round(time.perf_counter() - started, 1)
        targets = evaluate_targets(results) if perf_rows else []
        results["targets"] = [
            {**asdict(t), "passed": t.passed, "verdict": t.verdict} for t in targets
        ]
        args.out.mkdir(parents=True, exist_ok=True)
        render_chart(results, args.out / CHART_NAME)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "report.md").write_text(render_markdown(results, targets, CHART_NAME))
        for t in targets:
            print(f"{t.verdict:14} {t.measured:6.2f} (>= {t.threshold}) {t.name}")
        print(f"report: {args.out / 'report.md'} ({results['duration_s']:.0f} s)")
        if failure is not None:
            raise failure
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 on failure (maps disagree, a step failed)."""
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like an error, so the server and its stubs are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("cucim", "PIL", "matplotlib", "grpc", "wsi_tumor.export", "torch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    shown = list(sys.argv[1:] if argv is None else argv)
    command = "make bench" if not shown else "benchmarks/run_benchmarks.py " + shlex.join(shown)
    try:
        return run(args, command)
    except WsiTumorError as exc:
        print(f"run_benchmarks: error: {exc}", file=sys.stderr)
        return 1
