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
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.commandline import EXIT_OK, add_logging_flags, make_parser, run_command
from wsi_tumor.errors import ConfigError
from wsi_tumor.export.calibration import DEFAULT_PATCHES, DEFAULT_REGIONS, CalibrationSet
from wsi_tumor.export.quantize import DEFAULT_METHOD, METHODS, QuantSettings

log = logging.getLogger(__name__)


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
    calibration: Path | None = None
    calibration_patches: int = DEFAULT_PATCHES
    calibration_regions: int = DEFAULT_REGIONS
    calibration_method: str = DEFAULT_METHOD
    reduce_range: bool = QuantSettings.reduce_range
    quiet: bool = True


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
    precision: str = "fp32"
    int8: dict[str, Any] | None = None


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
        help="fp32, or int8: both networks statically quantised (QDQ) on --calibration "
        "slides, for ONNX Runtime and for a TensorRT plan alike; fp16: TensorRT only",
    )
    _add_calibration_flags(parser)
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
        help="max |probability diff| of the last check: ONNX vs torch (default 1e-4), "
        "INT8 vs FP32 ONNX (0.1), TensorRT vs FP32 ONNX (1e-3 fp32, 1e-2 fp16, 5e-2 int8)",
    )
    add_logging_flags(parser, verbose=False)
    return parser


def _add_calibration_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="INT8 calibration slides: a wsi-synth dataset (its training split), a folder "
        "of slides or one slide; tissue patches and regions are drawn from them",
    )
    parser.add_argument("--calibration-patches", type=int, default=DEFAULT_PATCHES)
    parser.add_argument("--calibration-regions", type=int, default=DEFAULT_REGIONS)
    parser.add_argument("--calibration-method", choices=METHODS, default=DEFAULT_METHOD)
    parser.add_argument(
        "--reduce-range",
        action=argparse.BooleanOptionalAction,
        default=QuantSettings.reduce_range,
        help="7-bit weights in the ONNX Runtime graph: exact on x86 CPUs without VNNI, "
        "whose INT8 kernels saturate on 8-bit weights (docs/int8.md)",
    )


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    """Validate the parsed flags into an ExportConfig.

    Raises:
        ConfigError: on contradictory or out-of-range flags.
    """
    if args.format == "onnx" and args.precision == "fp16":
        raise ConfigError("--precision fp16 needs --format tensorrt")
    if args.runtime == "python-torch" and args.precision != "fp32":
        raise ConfigError("--runtime python-torch picks its own precision: leave --precision")
    if args.precision == "int8" and args.calibration is None:
        raise ConfigError(
            "--precision int8 needs --calibration (training slides: a wsi-synth dataset, a "
            "folder of slides or a slide)"
        )
    if args.calibration_patches < 1 or args.calibration_regions < 1:
        raise ConfigError("--calibration-patches and --calibration-regions must be >= 1")
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
        calibration=args.calibration,
        calibration_patches=args.calibration_patches,
        calibration_regions=args.calibration_regions,
        calibration_method=args.calibration_method,
        reduce_range=args.reduce_range,
        quiet=args.quiet,
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
    calibration = _calibration_set(config) if config.precision == "int8" else None
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
    own_tolerance = config.format == "onnx" and config.precision == "fp32"
    onnx_tol = (config.tolerance if own_tolerance else None) or parity.FP32_TOLERANCE
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
        int8 = None
        if calibration is not None:
            int8 = _quantise(config, calibration, staged, inputs, regions)
        plan_diff = None
        if config.format == "tensorrt":
            plan_diff = _build_plans(config, staged, inputs, onnx_probs, regions)
        if int8 is not None:
            from wsi_tumor.export.int8 import install_int8

            install_int8(staged, int8)
        for model_dir in (classifier, dense):
            version_dir = repository / model_dir.name / VERSION
            version_dir.mkdir(parents=True, exist_ok=True)
            for weights in sorted(model_dir.iterdir()):
                os.replace(weights, version_dir / weights.name)
    if int8 is None:  # no INT8 record of an earlier export stays beside FP32 weights
        for model_dir in (classifier, dense):
            _drop_int8_files(repository / model_dir.name / VERSION)
    write_repository(repository, runtime, config.precision)
    version_dir = repository / contract.CLASSIFIER_MODEL / VERSION
    plan_path = version_dir / PLAN_FILE if config.format == "tensorrt" else None
    return ExportResult(
        runtime,
        version_dir / ONNX_FILE,
        plan_path,
        exporter,
        onnx_diff,
        dense_diff,
        plan_diff,
        config.precision,
        int8,
    )


def _calibration_set(config: ExportConfig) -> CalibrationSet:
    """The calibration patches and regions of ``config.calibration`` (read before the slow
    export work, so an empty or tissueless set stops the export at once)."""
    from wsi_tumor.export.calibration import CalibrationConfig, read_calibration_set

    if config.calibration is None:
        raise ConfigError("--precision int8 needs --calibration")
    return read_calibration_set(
        CalibrationConfig(
            config.calibration, config.calibration_patches, config.calibration_regions
        ),
        quiet=config.quiet,
    )


def _quantise(
    config: ExportConfig,
    calibration: CalibrationSet,
    staged: Path,
    inputs: npt.NDArray[np.float32],
    regions: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]],
) -> dict[str, Any]:
    """Stage both INT8 graphs calibrated on ``calibration`` (see export.int8)."""
    from wsi_tumor.export.int8 import INT8_TOLERANCE, ParityInputs, quantise_networks

    tolerance = (config.tolerance if config.format == "onnx" else None) or INT8_TOLERANCE
    return quantise_networks(
        staged,
        calibration,
        QuantSettings(method=config.calibration_method, reduce_range=config.reduce_range),
        ParityInputs(inputs, regions),
        tensorrt=config.format == "tensorrt",
        tolerance=tolerance,
    )


def _drop_int8_files(version_dir: Path) -> None:
    from wsi_tumor.export.int8 import RANGES_FILE, RECORD_FILE

    for name in (RANGES_FILE, RECORD_FILE):
        (version_dir / name).unlink(missing_ok=True)


def _build_plans(
    config: ExportConfig,
    staged: Path,
    inputs: npt.NDArray[np.float32],
    onnx_probs: npt.NDArray[np.float32],
    regions: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]],
) -> float:
    """Build and check both TensorRT plans in ``staged``; return the worst |diff|."""
    from wsi_tumor.export import parity
    from wsi_tumor.export.int8 import TENSORRT_QDQ_FILE
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
    source = TENSORRT_QDQ_FILE if precision == "int8" else ONNX_FILE  # explicit quantisation
    build_plan(
        classifier / source,
        classifier / PLAN_FILE,
        precision,
        classifier_profile(MAX_PATCHES_PER_REQUEST),
    )
    build_plan(dense / source, dense / PLAN_FILE, precision, dense_profile(DENSE_MAX_REGIONS))
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
                f"TensorRT {precision} vs ONNX Runtime (dense, k = {cells})",
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
