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


def build_plan(
    onnx_path: Path,
    plan_path: Path,
    precision: Precision,
    max_batch: int,
    calibration: npt.NDArray[np.float32] | None = None,
    opt_batch: int = 64,
) -> Path:
    """Build ``plan_path`` with one optimisation profile over batch 1..``max_batch``.

    Args:
        onnx_path: The exported graph (dynamic batch).
        plan_path: Where to write the serialized engine.
        precision: fp32, fp16, or int8 (INT8 with FP16 fallback, entropy calibration).
        max_batch: The profile's largest batch: the classifier's max_batch_size.
        calibration: Normalised patches [B, 3, 224, 224] for INT8 calibration.
        opt_batch: The batch the profile optimises for.

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
    shape = (contract.CHANNELS, contract.PATCH_SIZE, contract.PATCH_SIZE)
    profile = builder.create_optimization_profile()
    profile.set_shape(
        contract.PATCHES_TENSOR,
        (1, *shape),
        (min(opt_batch, max_batch), *shape),
        (max_batch, *shape),
    )
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calibration is None or len(calibration) == 0:
            raise ExportError("--precision int8 needs calibration patches from slides")
        batch = min(32, len(calibration))
        cache = plan_path.with_suffix(".calibration")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator_class(trt)(calibration, batch, cache)
        config.set_calibration_profile(profile)
    log.info("building a %s TensorRT plan (batch 1..%d) from %s", precision, max_batch, onnx_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT failed to build a {precision} plan (see log)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    return plan_path


def plan_probabilities(
    plan_path: Path, inputs: npt.NDArray[np.float32], batch: int = 32
) -> npt.NDArray[np.float32]:
    """Run the plan on normalised patches [B, 3, 224, 224] and return probabilities [B, 1]."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise ExportError(f"{plan_path}: TensorRT cannot deserialize the plan")
    context = engine.create_execution_context()
    stream = torch.cuda.current_stream()
    outs = []
    for start in range(0, len(inputs), batch):
        x = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch])).cuda()
        y = torch.empty((len(x), 1), dtype=torch.float32, device="cuda")
        context.set_input_shape(contract.PATCHES_TENSOR, tuple(x.shape))
        context.set_tensor_address(contract.PATCHES_TENSOR, int(x.data_ptr()))
        context.set_tensor_address(contract.PROBABILITIES_TENSOR, int(y.data_ptr()))
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError(f"{plan_path}: TensorRT execution failed")
        stream.synchronize()
        outs.append(y.cpu().numpy())
    return np.concatenate(outs)
