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


def builder_flags(precision: Precision, onnx_path: Path) -> tuple[str, ...]:
    """The ``trt.BuilderFlag`` names a plan of ``precision`` is built with from ``onnx_path``.

    INT8 is explicit quantisation: the graph must be a QDQ graph (its Q/DQ nodes carry the
    calibrated scales, :mod:`wsi_tumor.export.quantize`), so no calibrator is set; FP16 is
    allowed too, for the float layers around the quantised backbone (normalisation, head).

    Raises:
        ExportError: for ``int8`` on a graph without Q/DQ nodes (or a QDQ graph otherwise).
    """
    from wsi_tumor.serving.precision import graph_precision

    quantised = graph_precision(onnx_path) == "int8"
    if precision == "int8" and not quantised:
        raise ExportError(
            f"{onnx_path}: an INT8 plan needs a QDQ graph (explicit quantisation); this one "
            "has no QuantizeLinear/DequantizeLinear node"
        )
    if precision != "int8" and quantised:
        raise ExportError(f"{onnx_path}: a {precision} plan cannot be built from a QDQ graph")
    return {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8")}[precision]


def build_plan(
    onnx_path: Path,
    plan_path: Path,
    precision: Precision,
    profile: Profile,
) -> Path:
    """Build ``plan_path`` with one optimisation profile.

    Args:
        onnx_path: The exported graph (dynamic shapes); for ``int8`` the symmetric QDQ graph
            of :func:`wsi_tumor.export.quantize.quantize_graph` (target ``tensorrt``).
        plan_path: Where to write the serialized engine.
        precision: fp32, fp16, or int8 (explicit quantisation, FP16 elsewhere).
        profile: (min, opt, max) shape per input (:func:`classifier_profile`,
            :func:`dense_profile`).

    Raises:
        ExportError: without tensorrt/GPU, on parser errors, a graph of the wrong kind for
            ``precision`` (:func:`builder_flags`) or a failed build.
    """
    flags = builder_flags(precision, onnx_path)
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
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
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
