"""``wsi-export``: checkpoint -> ONNX (+ TensorRT plan) -> parity checks -> model repository."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from wsi_tumor import contract
from wsi_tumor.errors import ConfigError, WsiTumorError, report_error

log = logging.getLogger(__name__)

CALIBRATION_PATCHES = 512
"""Patches sampled from the parity slide to calibrate an INT8 plan."""


@dataclass(frozen=True)
class ExportConfig:
    """Resolved options of one export run."""

    checkpoint: Path
    repository: Path
    format: str = "onnx"
    precision: str = "fp32"
    runtime: str = "auto"
    parity_slide: Path | None = None
    parity_patches: int = 32
    tolerance: float | None = None


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and measured."""

    runtime: str
    onnx_path: Path
    plan_path: Path | None
    exporter: str
    onnx_max_diff: float
    plan_max_diff: float | None


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``wsi-export``."""
    parser = argparse.ArgumentParser(prog="wsi-export", description=__doc__)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="training checkpoint or MONAI bundle models/model.pt",
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx")
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="TensorRT precision (ONNX is always fp32)",
    )
    parser.add_argument(
        "--runtime",
        default="auto",
        choices=("auto", "onnxruntime", "tensorrt", "python-onnxruntime"),
        help="classifier runtime; auto: python-onnxruntime when the local "
        "server has no onnxruntime backend",
    )
    parser.add_argument(
        "--parity-slide",
        type=Path,
        default=None,
        help="slide to sample parity/calibration patches from (default: the real H&E sample image)",
    )
    parser.add_argument("--parity-patches", type=int, default=32)
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="max |probability diff|: default 1e-4 ONNX vs torch; TensorRT vs "
        "ONNX 1e-3 fp32, 1e-2 fp16, 5e-2 int8",
    )
    parser.add_argument("--quiet", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    """Validate the parsed flags into an ExportConfig.

    Raises:
        ConfigError: on contradictory or out-of-range flags.
    """
    if args.format == "onnx" and args.precision != "fp32":
        raise ConfigError(f"--precision {args.precision} needs --format tensorrt")
    if args.parity_patches < 1:
        raise ConfigError(f"--parity-patches must be >= 1, got {args.parity_patches}")
    if args.tolerance is not None and not args.tolerance > 0:
        raise ConfigError(f"--tolerance must be > 0, got {args.tolerance}")
    return ExportConfig(
        checkpoint=args.checkpoint,
        repository=args.repository,
        format=args.format,
        precision=args.precision,
        runtime=args.runtime,
        parity_slide=args.parity_slide,
        parity_patches=args.parity_patches,
        tolerance=args.tolerance,
    )


def run_export(config: ExportConfig) -> ExportResult:
    """Export, check and write the repository as ``config`` says.

    The weights are built and checked in a staging folder beside the repository and moved
    into it only once every check passed, so a failed export never leaves an unchecked model
    where the server would load it.

    Raises:
        CheckpointError: unreadable or foreign checkpoint.
        ExportError: parity above tolerance, TensorRT/GPU missing, export failure.
    """
    from wsi_tumor.export import parity
    from wsi_tumor.export.checkpoint import load_model
    from wsi_tumor.export.onnx_export import export_onnx
    from wsi_tumor.serving.limits import MAX_PATCHES_PER_REQUEST
    from wsi_tumor.serving.repository import (
        ONNX_FILE,
        PLAN_FILE,
        VERSION,
        resolve_runtime,
        write_repository,
    )

    runtime = resolve_runtime(config.runtime, config.format)
    if config.format == "tensorrt":
        from wsi_tumor.export.tensorrt_build import require_tensorrt

        require_tensorrt()  # fail before any slow work
    model = load_model(config.checkpoint)
    repository = config.repository.resolve()
    repository.mkdir(parents=True, exist_ok=True)
    version_dir = repository / contract.CLASSIFIER_MODEL / VERSION
    # Staged beside (not inside) the repository: Triton would take a folder in it for a model.
    with tempfile.TemporaryDirectory(prefix=".wsi-export-", dir=repository.parent) as tmp:
        staged = Path(tmp)
        exporter = export_onnx(model, staged / ONNX_FILE)
        inputs = parity.to_network_input(
            parity.sample_patches(config.parity_slide, config.parity_patches)
        )
        onnx_probs = parity.onnx_probabilities(staged / ONNX_FILE, inputs)
        torch_probs = parity.torch_probabilities(model, inputs)
        onnx_tol = config.tolerance if config.format == "onnx" and config.tolerance else None
        onnx_diff = parity.check_parity(
            torch_probs, onnx_probs, onnx_tol or parity.FP32_TOLERANCE, "ONNX Runtime vs PyTorch"
        )
        plan_diff = None
        if config.format == "tensorrt":
            from wsi_tumor.export.tensorrt_build import build_plan, plan_probabilities

            calibration = None
            if config.precision == "int8":
                calibration = parity.to_network_input(
                    parity.sample_patches(config.parity_slide, CALIBRATION_PATCHES, seed=1)
                )
            build_plan(
                staged / ONNX_FILE,
                staged / PLAN_FILE,
                config.precision,  # type: ignore[arg-type]
                MAX_PATCHES_PER_REQUEST,
                calibration=calibration,
            )
            tolerance = config.tolerance or parity.TENSORRT_TOLERANCE[config.precision]
            plan_diff = parity.check_parity(
                onnx_probs,
                plan_probabilities(staged / PLAN_FILE, inputs),
                tolerance,
                f"TensorRT {config.precision} vs ONNX Runtime",
            )
        version_dir.mkdir(parents=True, exist_ok=True)
        for weights in sorted(staged.iterdir()):
            os.replace(weights, version_dir / weights.name)
    write_repository(repository, runtime)
    plan_path = version_dir / PLAN_FILE if config.format == "tensorrt" else None
    return ExportResult(runtime, version_dir / ONNX_FILE, plan_path, exporter, onnx_diff, plan_diff)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wsi-export`` and ``export/export_onnx.py``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
        result = run_export(config)
    except WsiTumorError as exc:
        return report_error("wsi-export", exc)
    summary = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
    summary["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    log.info("export done: %s", json.dumps(summary))
    return 0
