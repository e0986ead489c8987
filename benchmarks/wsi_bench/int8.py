"""The INT8 half of ``make bench``: weights, calibration, the INT8 repository and its ways.

INT8 is measured on the same slide, in the same run, beside FP32: the same checkpoint is
exported twice (``wsi-export`` FP32 and ``--precision int8``, calibrated on the training
slides of a small synthetic training set, never on the bench slide), and after the FP32
server's measurements a second server on the INT8 repository gets the same perf_analyzer
sweep and two ways through the slide:

(e) ``wsi-infer --mode exact`` on the INT8 classifier;
(f) ``wsi-infer --mode dense`` on the INT8 dense model.

The INT8 maps are compared with the FP32 ones of the same checkpoint ((e) with (b), (f) with
(d)). That comparison needs trained weights (a random-init network's outputs hardly vary, so
quantisation noise dominates any correlation): without ``--checkpoint`` the bench trains one
with the demo's recipe on the training set (:func:`quick_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_bench import BenchError
from wsi_bench.resources import TreeSampler
from wsi_bench.ways import WayResult
from wsi_tumor import contract
from wsi_tumor.stages import Stage, console_script, run_stage

log = logging.getLogger(__name__)

INT8_WAYS = {"e": ("b", "exact"), "f": ("d", "dense")}
"""INT8 way -> (its FP32 counterpart, the mode)."""
TRAIN_SLIDES = 4
"""Training slides (tumour and normal together) of the training/calibration set."""
TRAIN_RECIPE = (
    "--epochs", "2", "--batch-size", "4", "--max-steps-per-epoch", "30",
    "--max-valid-steps", "10", "--workers", "2",
)  # fmt: skip
"""The demo's training recipe (``wsi_tumor.demo.DemoConfig``)."""


def training_set(workdir: Path, *, size: int, seed: int, quiet: bool = True) -> Path:
    """A small ``wsi-synth`` training set (seed ``seed + 1``: other slides than the bench's).

    Its training split is what the INT8 export calibrates on (and what a quick checkpoint
    trains on).
    """
    data = workdir / "training_data"
    run_stage(
        Stage(
            "synthesise the training set",
            [console_script("wsi-synth"), str(data), "--train", str(TRAIN_SLIDES), "--valid",
             "2", "--test", "0", "--size", str(size), "--seed", str(seed + 1), "--coords",
             "150", "--valid-coords", "30", *(["--quiet"] if quiet else [])],
        )
    )  # fmt: skip
    return data


def quick_checkpoint(data: Path, workdir: Path, *, seed: int, quiet: bool = True) -> Path:
    """Labels and a short training run (the demo's recipe) on ``data``; the best checkpoint."""
    out = workdir / "checkpoints"
    flags = ["--quiet"] if quiet else []
    run_stage(Stage("write the training labels", [console_script("wsi-labels"), str(data), *flags]))
    run_stage(
        Stage(
            "train a checkpoint (demo recipe)",
            [console_script("wsi-train"), str(data), "--out", str(out), *TRAIN_RECIPE,
             "--seed", str(seed), *flags],
        )
    )  # fmt: skip
    return out / "best.pt"


def export_int8(checkpoint: Path, data: Path, workdir: Path, patches: int, regions: int) -> Path:
    """The INT8 repository (``python-onnxruntime``) of ``checkpoint``, calibrated on
    ``patches`` patches and ``regions`` regions of ``data``."""
    from wsi_tumor.export.cli import ExportConfig, run_export

    repository = workdir / "model_repository_int8"
    run_export(
        ExportConfig(
            checkpoint=checkpoint,
            repository=repository,
            runtime="python-onnxruntime",
            precision="int8",
            parity_patches=8,
            calibration=data,
            calibration_patches=patches,
            calibration_regions=regions,
        )
    )
    return repository


def repository_kernels(repository: Path) -> dict[str, dict[str, int]]:
    """Per network of ``repository``: the operators ONNX Runtime's CPU provider runs."""
    from wsi_tumor.export.quantize import ort_kernels
    from wsi_tumor.serving.repository import NETWORK_MODELS, ONNX_FILE, VERSION

    return {
        model: ort_kernels(repository / model / VERSION / ONNX_FILE) for model in NETWORK_MODELS
    }


def int8_setup(repository: Path, fp32_repository: Path) -> dict[str, Any]:
    """What the report says about the INT8 export: CPU features, the kernels ONNX Runtime
    runs for both repositories, the quantisation records."""
    from wsi_tumor.export.int8 import read_record
    from wsi_tumor.export.quantize import cpu_int8_features, has_int8_dot_product
    from wsi_tumor.serving.repository import VERSION

    features = cpu_int8_features()
    records = {
        model: read_record(repository / model / VERSION)
        for model in (contract.CLASSIFIER_MODEL, contract.DENSE_MODEL)
    }
    return {
        "cpu_features": features,
        "dot_product": has_int8_dot_product(features),
        "kernels": repository_kernels(repository),
        "fp32_kernels": repository_kernels(fp32_repository),
        "records": records,
    }


def measure_int8(
    args: Any, prepared: Any, workdir: Path, sampler: TreeSampler, plan: Any
) -> tuple[list[Any], list[WayResult]]:
    """The INT8 server's perf_analyzer sweep and ways (e) and (f).

    Returns:
        (perf rows tagged ``precision="int8"``, the two ways).
    """
    from wsi_bench.sweep import run_sweep
    from wsi_bench.ways import run_client_ways
    from wsi_tumor.serving.local_server import LocalTritonServer

    server = LocalTritonServer(prepared.int8_repository, log_path=workdir / "tritonserver_int8.log")
    with server:
        if server.pid is None:
            raise BenchError("the INT8 tritonserver has no process id")
        sampler.watch("server", server.pid)
        perf = (
            []
            if args.skip_perf
            else run_sweep(server.grpc_url, plan, workdir / "int8", prepared.crop, server.pid)
        )
        ways = run_client_ways("".join(INT8_WAYS), prepared.slide, server, workdir, sampler, args)
    return [dataclasses.replace(row, precision="int8") for row in perf], ways


def int8_agreement(maps: dict[str, npt.NDArray[np.float32]]) -> dict[str, dict[str, Any]]:
    """Each INT8 map against its FP32 counterpart over the tissue cells (non-zero in either):
    Pearson, mean and max |difference|, cells on the other side of 0.5."""
    from wsi_tumor.evaluation.agreement import map_agreement

    return {
        f"{fp32}-{key}": map_agreement(maps[fp32], maps[key]).to_json()
        for key, (fp32, _) in INT8_WAYS.items()
        if key in maps and fp32 in maps
    }
