"""Build a TensorRT plan from the exported ONNX and check it against ONNX Runtime.

Needs the ``tensorrt`` package (``pip install wsi-tumor[gpu]``) and a CUDA GPU; without them
every entry point stops with an ExportError saying what is missing. Written against the
TensorRT 10 Python API (explicit batch networks, ``build_serialized_network``,
``execute_async_v3``); device buffers come from torch's CUDA allocator.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from wsi_tumor import contract
from wsi_tumor.errors import ExportError

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]
WORKSPACE_BYTES = 4 << 30
INSTALL_HINT = "install it with `pip install wsi-tumor[gpu]` on a machine with an NVIDIA GPU"


def require_tensorrt() -> Any:
    """Import tensorrt and check for a CUDA GPU.

    Raises:
        ExportError: naming what is missing (the package or the GPU) and how to get it.
    """
    try:
        import tensorrt
    except ImportError as exc:
        raise ExportError(f"--format tensorrt needs the tensorrt package: {INSTALL_HINT}") from exc
    if not torch.cuda.is_available():
        raise ExportError(
            "--format tensorrt needs a CUDA GPU, and torch sees none here: run the export "
            "on the GPU machine that will serve the plan (plans are GPU-specific)"
        )
    return tensorrt


def _calibrator_class(trt: Any) -> type:
    class PatchCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds normalised slide patches to INT8 calibration, one batch at a time."""

        def __init__(self, inputs: npt.NDArray[np.float32], batch: int, cache: Path) -> None:
            super().__init__()
            self.inputs, self.batch, self.cache, self.index = inputs, batch, cache, 0
            self.device = torch.empty((batch, *inputs.shape[1:]), device="cuda")

        def get_batch_size(self) -> int:
            return self.batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index + self.batch > len(self.inputs):
                return None
            chunk = self.inputs[self.index : self.index + self.batch]
            self.device.copy_(torch.from_numpy(chunk))
            self.index += self.batch
            return [int(self.device.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return self.cache.read_bytes() if self.cache.exists() else None

        def write_calibration_cache(self, cache: bytes) -> None:
            self.cache.write_bytes(bytes(cache))

    return PatchCalibrator


Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]
"""Per input: the (min, opt, max) shapes of one optimisation profile."""


def classifier_profile(max_batch: int, opt_batch: int = 64) -> Profile:
    """The classifier's profile: batches of 1..``max_batch`` patches."""
    shape = (contract.CHANNELS, contract.PATCH_SIZE, contract.PATCH_SIZE)
    opt = min(opt_batch, max_batch)
    return {contract.PATCHES_TENSOR: ((1, *shape), (opt, *shape), (max_batch, *shape))}


def dense_profile(max_regions: int, opt_cells: int = contract.DENSE_REGION_CELLS) -> Profile:
    """The dense model's profile: 1..``max_regions`` regions of k from the contract's range."""
    low, high = contract.DENSE_MIN_CELLS, contract.DENSE_MAX_CELLS
    opt_regions = max(1, max_regions // 4)

    def shapes(cells: int, regions: int) -> tuple[Shape, Shape]:
        side = contract.region_size(cells)
        return (regions, side, side, contract.CHANNELS), (regions, cells, cells)

    (rmin, mmin), (ropt, mopt), (rmax, mmax) = (
        shapes(low, 1),
        shapes(opt_cells, opt_regions),
        shapes(high, max_regions),
    )
    return {
        contract.REGIONS_TENSOR: (rmin, ropt, rmax),
        contract.CELL_MASK_TENSOR: (mmin, mopt, mmax),
    }


def build_plan(
    onnx_path: Path,
    plan_path: Path,
    precision: Precision,
    profile: Profile,
    calibration: npt.NDArray[np.float32] | None = None,
) -> Path:
    """Build ``plan_path`` with one optimisation profile.

    Args:
        onnx_path: The exported graph (dynamic shapes).
        plan_path: Where to write the serialized engine.
        precision: fp32, fp16, or int8 (INT8 with FP16 fallback, entropy calibration of a
            single-input network such as the classifier).
        profile: (min, opt, max) shape per input (:func:`classifier_profile`,
            :func:`dense_profile`).
        calibration: The single input's calibration batches (INT8 only).

    Raises:
        ExportError: without tensorrt/GPU, on parser errors, missing calibration data or a
            failed build.
    """
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT cannot parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    optimisation = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        optimisation.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimisation)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calibration is None or len(calibration) == 0 or len(profile) != 1:
            raise ExportError("--precision int8 needs calibration data for a single-input network")
        batch = min(32, len(calibration))
        cache = plan_path.with_suffix(".calibration")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator_class(trt)(calibration, batch, cache)
        config.set_calibration_profile(optimisation)
    log.info("building a %s TensorRT plan %s from %s", precision, plan_path.name, onnx_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT failed to build a {precision} plan (see log)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    return plan_path


def run_plan(
    plan_path: Path,
    feeds: dict[str, npt.NDArray[np.generic]],
    output: str,
    output_dims: Shape,
    batch: int = 8,
) -> npt.NDArray[np.float32]:
    """Run the plan over ``feeds`` (split along the batch axis) and return ``output``.

    Args:
        plan_path: The serialized engine.
        feeds: Input arrays by name, same batch length.
        output: The output tensor's name (FP32).
        output_dims: The output's shape after the batch axis.
        batch: Items per execution.
    """
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise ExportError(f"{plan_path}: TensorRT cannot deserialize the plan")
    context = engine.create_execution_context()
    stream = torch.cuda.current_stream()
    total = len(next(iter(feeds.values())))
    outs = []
    for start in range(0, total, batch):
        inputs = {
            name: torch.from_numpy(np.ascontiguousarray(a[start : start + batch])).cuda()
            for name, a in feeds.items()
        }
        count = len(next(iter(inputs.values())))
        y = torch.empty((count, *output_dims), dtype=torch.float32, device="cuda")
        for name, x in inputs.items():
            context.set_input_shape(name, tuple(x.shape))
            context.set_tensor_address(name, int(x.data_ptr()))
        context.set_tensor_address(output, int(y.data_ptr()))
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError(f"{plan_path}: TensorRT execution failed")
        stream.synchronize()
        outs.append(y.cpu().numpy())
    return np.concatenate(outs)
