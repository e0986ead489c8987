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
from typing import cast

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.commandline import EXIT_OK, add_logging_flags, make_parser, run_command
from wsi_tumor.errors import ConfigError

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
    instance_kind: str = "auto"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and measured."""

    runtime: str
    onnx_path: Path
    plan_path: Path | None
    exporter: str
    onnx_max_diff: float
    dense_max_diff: float
    plan_max_diff: float | None


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``wsi-export``."""
    parser = make_parser("wsi-export", __doc__)
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
        help="TensorRT precision (ONNX is always fp32; the dense plan is at most fp16)",
    )
    parser.add_argument(
        "--runtime",
        default="auto",
        choices=("auto", "onnxruntime", "tensorrt", "python-onnxruntime", "python-torch"),
        help="network runtime; auto: python-onnxruntime when the local "
        "server has no onnxruntime backend; python-torch: PyTorch in the Python backend "
        "(FP16 on GPU instances), for a Triton without TensorRT or onnxruntime-gpu",
    )
    parser.add_argument(
        "--instance-kind",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="python-torch only: KIND_GPU or KIND_CPU instances (auto: GPU when this "
        "machine's torch sees one)",
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
    add_logging_flags(parser, verbose=False)
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
        instance_kind=args.instance_kind,
    )


def run_export(config: ExportConfig) -> ExportResult:
    """Export, check and write the repository as ``config`` says.

    Both networks are exported: the patch classifier (``tumor_classifier``, the exact mode's
    ensemble step) and the dense whole-region model (``tumor_detector_dense``). The weights
    are built and checked in a staging folder beside the repository and moved into it only
    once every check passed, so a failed export never leaves an unchecked model where the
    server would load it.

    Raises:
        CheckpointError: unreadable or foreign checkpoint.
        ExportError: parity above tolerance, TensorRT/GPU missing, export failure.
    """
    from wsi_tumor.export import parity
    from wsi_tumor.export.onnx_export import export_dense_onnx, export_onnx
    from wsi_tumor.models.checkpoint import load_model
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
    if runtime == "python-torch":  # PyTorch weights, no ONNX graph
        from wsi_tumor.export.torch_export import export_torch, gpu_instances

        done = export_torch(
            model,
            repository,
            gpu_instances(config.instance_kind),
            config.parity_slide,
            config.parity_patches,
            config.tolerance,
        )  # onnx_path: model.pt; plan_max_diff: the GPU's FP16 session vs FP32
        return ExportResult(runtime, done.weights, None, "torch", *done[1:])
    onnx_tol = (config.tolerance if config.format == "onnx" else None) or parity.FP32_TOLERANCE
    # Staged beside (not inside) the repository: Triton would take a folder in it for a model.
    with tempfile.TemporaryDirectory(prefix=".wsi-export-", dir=repository.parent) as tmp:
        staged = Path(tmp)
        classifier, dense = staged / contract.CLASSIFIER_MODEL, staged / contract.DENSE_MODEL
        exporter = export_onnx(model, classifier / ONNX_FILE)
        export_dense_onnx(model, dense / ONNX_FILE)
        inputs = parity.to_network_input(
            parity.sample_patches(config.parity_slide, config.parity_patches)
        )
        onnx_probs = parity.onnx_probabilities(classifier / ONNX_FILE, inputs)
        onnx_diff = parity.check_parity(
            parity.torch_probabilities(model, inputs),
            onnx_probs,
            onnx_tol,
            "ONNX Runtime vs PyTorch (classifier)",
        )
        regions = parity.sample_regions(config.parity_slide, max(2, config.parity_patches // 8))
        dense_diff = max(
            parity.check_parity(
                parity.torch_dense(model, pixels, mask),
                parity.onnx_dense(dense / ONNX_FILE, pixels, mask),
                onnx_tol,
                f"ONNX Runtime vs PyTorch (dense, k = {mask.shape[1]})",
            )
            for pixels, mask in regions
        )
        plan_diff = None
        if config.format == "tensorrt":
            plan_diff = _build_plans(config, staged, inputs, onnx_probs, regions)
        for model_dir in (classifier, dense):
            version_dir = repository / model_dir.name / VERSION
            version_dir.mkdir(parents=True, exist_ok=True)
            for weights in sorted(model_dir.iterdir()):
                os.replace(weights, version_dir / weights.name)
    write_repository(repository, runtime)
    version_dir = repository / contract.CLASSIFIER_MODEL / VERSION
    plan_path = version_dir / PLAN_FILE if config.format == "tensorrt" else None
    return ExportResult(
        runtime, version_dir / ONNX_FILE, plan_path, exporter, onnx_diff, dense_diff, plan_diff
    )


def _build_plans(
    config: ExportConfig,
    staged: Path,
    inputs: npt.NDArray[np.float32],
    onnx_probs: npt.NDArray[np.float32],
    regions: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]],
) -> float:
    """Build and check both TensorRT plans in ``staged``; return the worst |diff|."""
    from wsi_tumor.export import parity
    from wsi_tumor.export.tensorrt_build import (
        Precision,
        build_plan,
        classifier_profile,
        dense_profile,
        run_plan,
    )
    from wsi_tumor.serving.limits import DENSE_MAX_REGIONS, MAX_PATCHES_PER_REQUEST
    from wsi_tumor.serving.repository import ONNX_FILE, PLAN_FILE

    classifier, dense = staged / contract.CLASSIFIER_MODEL, staged / contract.DENSE_MODEL
    precision = cast(Precision, config.precision)
    calibration = None
    if precision == "int8":
        calibration = parity.to_network_input(
            parity.sample_patches(config.parity_slide, CALIBRATION_PATCHES, seed=1)
        )
    build_plan(
        classifier / ONNX_FILE,
        classifier / PLAN_FILE,
        precision,
        classifier_profile(MAX_PATCHES_PER_REQUEST),
        calibration=calibration,
    )
    dense_precision: Precision = "fp16" if precision == "int8" else precision
    if dense_precision != precision:
        log.info("the dense plan is built in fp16 (INT8 calibration covers the classifier)")
    build_plan(
        dense / ONNX_FILE, dense / PLAN_FILE, dense_precision, dense_profile(DENSE_MAX_REGIONS)
    )
    tolerance = config.tolerance or parity.TENSORRT_TOLERANCE[config.precision]
    diffs = [
        parity.check_parity(
            onnx_probs,
            run_plan(
                classifier / PLAN_FILE,
                {contract.PATCHES_TENSOR: inputs},
                contract.PROBABILITIES_TENSOR,
                (1,),
            ),
            tolerance,
            f"TensorRT {config.precision} vs ONNX Runtime (classifier)",
        )
    ]
    for pixels, mask in regions:
        cells = mask.shape[1]
        diffs.append(
            parity.check_parity(
                parity.onnx_dense(dense / ONNX_FILE, pixels, mask),
                run_plan(
                    dense / PLAN_FILE,
                    {contract.REGIONS_TENSOR: pixels, contract.CELL_MASK_TENSOR: mask},
                    contract.GRID_TENSOR,
                    (cells, cells),
                ),
                tolerance,
                f"TensorRT {dense_precision} vs ONNX Runtime (dense, k = {cells})",
            )
        )
    return max(diffs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wsi-export`` and ``export/export_onnx.py``; returns the exit code."""
    return run_command("wsi-export", build_parser(), _export, argv)


def _export(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    result = run_export(config)
    summary = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
    summary["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    log.info("export done: %s", json.dumps(summary))
    return EXIT_OK
