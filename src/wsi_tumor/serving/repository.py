"""Render and write the Triton model repository from the contract (never hand-copied).

Five models. The exact mode's ensemble ``tumor_detector`` chains ``patch_tiler`` (Python,
non-batching) -> ``tumor_classifier`` (onnxruntime, tensorrt, or a Python backend running
ONNX Runtime or PyTorch; dynamic batching) -> ``grid_assembler`` (Python). The dense mode's
``tumor_detector_dense`` is one network (the fully convolutional pass over whole regions,
normalisation inside the graph) with the ensemble's interface and dynamic batching over
regions. Configs are built as ``model_config_pb2.ModelConfig`` messages and printed with
protobuf's ``text_format``, so they are valid by construction. The committed
``model_repository/`` is :func:`render_repository` with :data:`COMMITTED_RUNTIME`; weights
(model.onnx, model.plan, model.pt) are written by ``wsi-export``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal, get_args

from wsi_tumor import contract
from wsi_tumor.errors import ConfigError, ExportError
from wsi_tumor.serving.limits import (
    DENSE_MAX_REGIONS,
    MAX_PATCHES_PER_REQUEST,
    MAX_QUEUE_DELAY_US,
    PREFERRED_BATCH_SIZES,
)

log = logging.getLogger(__name__)

Runtime = Literal["onnxruntime", "tensorrt", "python-onnxruntime", "python-torch"]
RUNTIMES: Final[tuple[str, ...]] = get_args(Runtime)
COMMITTED_RUNTIME: Final = "onnxruntime"
"""Runtime of the committed repository: the standard layout for NVIDIA's containers."""
VERSION: Final = "1"
ONNX_FILE: Final = "model.onnx"
PLAN_FILE: Final = "model.plan"
TORCH_FILE: Final = "model.pt"
"""The ``python-torch`` runtime's weights: the network's state_dict (FP32)."""
PYTHON_RUNTIMES: Final = ("python-onnxruntime", "python-torch")
"""Runtimes whose networks run in the Python backend (a model.py in each version folder)."""
TORCH_WEIGHTS_PARAMETER: Final = "weights_file"
GPU_PRECISION_PARAMETER: Final = "gpu_precision"
"""``python-torch``: the arithmetic of GPU instances (CPU instances run FP32)."""
DEFAULT_GPU_PRECISION: Final = "fp16"
TORCH_GPU_INSTANCES: Final = 2
"""``python-torch`` GPU instances per network: one's transfers overlap the other's compute."""
MODEL_FILE: Final = "model.py"
NETWORK_MODELS: Final = (contract.CLASSIFIER_MODEL, contract.DENSE_MODEL)
"""Models whose weights ``wsi-export`` writes (and whose backend follows the runtime)."""

_PATCH_DIMS = (contract.CHANNELS, contract.PATCH_SIZE, contract.PATCH_SIZE)
_ADAPTERS = {
    contract.TILER_MODEL: "wsi_tumor.serving.triton_models.patch_tiler",
    contract.ASSEMBLER_MODEL: "wsi_tumor.serving.triton_models.grid_assembler",
    contract.CLASSIFIER_MODEL: "wsi_tumor.serving.triton_models.tumor_classifier_onnxruntime",
    contract.DENSE_MODEL: "wsi_tumor.serving.triton_models.dense_detector_onnxruntime",
}
_TORCH_ADAPTERS = {
    contract.CLASSIFIER_MODEL: "wsi_tumor.serving.triton_models.tumor_classifier_torch",
    contract.DENSE_MODEL: "wsi_tumor.serving.triton_models.dense_detector_torch",
}


def _pb() -> Any:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _text(config: Any) -> str:
    from google.protobuf import text_format

    return str(text_format.MessageToString(config))


def _add_tensor(field: Any, name: str, dtype: str, dims: Sequence[int]) -> None:
    field.add(name=name, data_type=getattr(_pb(), dtype), dims=list(dims))


def _runtime_head(config: Any, runtime: str, gpu: bool = False) -> None:
    """Backend, weights file and instance group of a network model for ``runtime``.

    ``gpu`` (``python-torch`` only) gives KIND_GPU instances; without it they are KIND_CPU.
    """
    pb = _pb()
    if runtime not in RUNTIMES:
        raise ExportError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    group = config.instance_group.add(count=1)
    if runtime == "onnxruntime":
        config.backend, config.default_model_filename = "onnxruntime", ONNX_FILE
    elif runtime == "tensorrt":
        config.backend, config.default_model_filename = "tensorrt", PLAN_FILE
        group.kind = pb.ModelInstanceGroup.KIND_GPU
    elif runtime == "python-torch":
        config.backend = "python"
        config.parameters[TORCH_WEIGHTS_PARAMETER].string_value = TORCH_FILE
        config.parameters[GPU_PRECISION_PARAMETER].string_value = DEFAULT_GPU_PRECISION
        group.kind = pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU
        group.count = TORCH_GPU_INSTANCES if gpu else 1
    else:
        config.backend = "python"
        config.parameters["onnx_file"].string_value = ONNX_FILE


def _model_mpp(config: Any) -> None:
    config.parameters[contract.MODEL_MPP_PARAMETER].string_value = repr(contract.MODEL_MPP)


def _precision(config: Any, precision: str) -> None:
    if precision not in contract.PRECISIONS:
        raise ExportError(
            f"unknown precision {precision!r}; choose one of {', '.join(contract.PRECISIONS)}"
        )
    config.parameters[contract.PRECISION_PARAMETER].string_value = precision


def render_classifier_config(
    runtime: Runtime = COMMITTED_RUNTIME,
    max_batch_size: int = MAX_PATCHES_PER_REQUEST,
    gpu: bool = False,
    precision: str = "fp32",
) -> str:
    """config.pbtxt of ``tumor_classifier`` for ``runtime``.

    Args:
        runtime: "onnxruntime" (NVIDIA's onnxruntime backend), "tensorrt" (a plan, GPU
            instances), "python-onnxruntime" (Python backend running model.onnx) or
            "python-torch" (Python backend running model.pt with PyTorch).
        max_batch_size: The batch limit; a TensorRT plan's profile must reach it.
        gpu: ``python-torch`` on GPU instances (else CPU ones).
        precision: The ``precision`` parameter (fp32, fp16 or int8): what the weights are.

    Raises:
        ExportError: on an unknown runtime or precision, or a non-positive batch size.
    """
    if max_batch_size < 1:
        raise ExportError(f"tumor_classifier max_batch_size must be >= 1, got {max_batch_size}")
    config = _pb().ModelConfig(name=contract.CLASSIFIER_MODEL, max_batch_size=max_batch_size)
    _runtime_head(config, runtime, gpu)
    _add_tensor(config.input, contract.PATCHES_TENSOR, "TYPE_FP32", _PATCH_DIMS)
    _add_tensor(config.output, contract.PROBABILITIES_TENSOR, "TYPE_FP32", [1])
    preferred = [b for b in PREFERRED_BATCH_SIZES if b <= max_batch_size] or [max_batch_size]
    config.dynamic_batching.preferred_batch_size.extend(preferred)
    config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    _precision(config, precision)
    warmup = config.model_warmup.add(name="one_zero_patch", batch_size=1)
    patches = warmup.inputs[contract.PATCHES_TENSOR]
    patches.data_type, patches.zero_data = _pb().TYPE_FP32, True
    patches.dims.extend(_PATCH_DIMS)
    return _text(config)


def render_dense_config(
    runtime: Runtime = COMMITTED_RUNTIME,
    max_batch_size: int = DENSE_MAX_REGIONS,
    gpu: bool = False,
    precision: str = "fp32",
) -> str:
    """config.pbtxt of ``tumor_detector_dense``: regions + cell mask -> grid, batching regions.

    ``gpu``: ``python-torch`` on GPU instances (else CPU ones).

    Raises:
        ExportError: on an unknown runtime or precision, or a non-positive batch size.
    """
    if max_batch_size < 1:
        raise ExportError(f"{contract.DENSE_MODEL} max_batch_size must be >= 1")
    config = _pb().ModelConfig(name=contract.DENSE_MODEL, max_batch_size=max_batch_size)
    _runtime_head(config, runtime, gpu)
    _add_tensor(config.input, contract.REGIONS_TENSOR, "TYPE_UINT8", [-1, -1, contract.CHANNELS])
    _add_tensor(config.input, contract.CELL_MASK_TENSOR, "TYPE_BOOL", [-1, -1])
    _add_tensor(config.output, contract.GRID_TENSOR, "TYPE_FP32", [-1, -1])
    config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    _model_mpp(config)
    _precision(config, precision)
    side = contract.region_size(contract.DENSE_MIN_CELLS)
    warmup = config.model_warmup.add(name="one_zero_region", batch_size=1)
    regions = warmup.inputs[contract.REGIONS_TENSOR]
    regions.data_type, regions.zero_data = _pb().TYPE_UINT8, True
    regions.dims.extend([side, side, contract.CHANNELS])
    mask = warmup.inputs[contract.CELL_MASK_TENSOR]
    mask.data_type, mask.zero_data = _pb().TYPE_BOOL, True
    mask.dims.extend([contract.DENSE_MIN_CELLS, contract.DENSE_MIN_CELLS])
    return _text(config)


def render_tiler_config(max_patches: int = MAX_PATCHES_PER_REQUEST) -> str:
    """config.pbtxt of ``patch_tiler`` (Python backend, max_batch_size 0)."""
    config = _pb().ModelConfig(name=contract.TILER_MODEL, backend="python")
    _add_tensor(config.input, contract.REGIONS_TENSOR, "TYPE_UINT8", [-1, -1, -1, 3])
    _add_tensor(config.input, contract.CELL_MASK_TENSOR, "TYPE_BOOL", [-1, -1, -1])
    _add_tensor(config.output, contract.PATCHES_TENSOR, "TYPE_FP32", [-1, *_PATCH_DIMS])
    config.parameters["max_patches"].string_value = str(max_patches)
    config.instance_group.add(count=2, kind=_pb().ModelInstanceGroup.KIND_CPU)
    return _text(config)


def render_assembler_config() -> str:
    """config.pbtxt of ``grid_assembler`` (Python backend, max_batch_size 0)."""
    config = _pb().ModelConfig(name=contract.ASSEMBLER_MODEL, backend="python")
    _add_tensor(config.input, contract.PROBABILITIES_TENSOR, "TYPE_FP32", [-1, 1])
    _add_tensor(config.input, contract.CELL_MASK_TENSOR, "TYPE_BOOL", [-1, -1, -1])
    _add_tensor(config.output, contract.GRID_TENSOR, "TYPE_FP32", [-1, -1, -1])
    config.instance_group.add(count=1, kind=_pb().ModelInstanceGroup.KIND_CPU)
    return _text(config)


def render_ensemble_config(precision: str = "fp32") -> str:
    """config.pbtxt of the ensemble ``tumor_detector`` (identical for every runtime; its
    ``precision`` parameter is the classifier's, for the client)."""
    regions, mask = contract.REGIONS_TENSOR, contract.CELL_MASK_TENSOR
    patches, probs = contract.PATCHES_TENSOR, contract.PROBABILITIES_TENSOR
    config = _pb().ModelConfig(name=contract.ENSEMBLE_MODEL, platform="ensemble")
    _add_tensor(config.input, regions, "TYPE_UINT8", [-1, -1, -1, contract.CHANNELS])
    _add_tensor(config.input, mask, "TYPE_BOOL", [-1, -1, -1])
    _add_tensor(config.output, contract.GRID_TENSOR, "TYPE_FP32", [-1, -1, -1])
    _model_mpp(config)
    _precision(config, precision)
    for model, inputs, outputs in (
        (contract.TILER_MODEL, [regions, mask], [patches]),
        (contract.CLASSIFIER_MODEL, [patches], [probs]),
        (contract.ASSEMBLER_MODEL, [probs, mask], [contract.GRID_TENSOR]),
    ):
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        for tensor in inputs:
            step.input_map[tensor] = tensor
        for tensor in outputs:
            step.output_map[tensor] = tensor
    return _text(config)


def model_source(model: str, runtime: str = COMMITTED_RUNTIME) -> str:
    """The model.py Triton loads for ``model``: an entry point importing the packaged adapter.

    The adapter itself lives once, in ``wsi_tumor.serving.triton_models``; the repository only
    names it, so the server's Python must import wsi_tumor (see model_repository/README.md).
    """
    adapter = (_TORCH_ADAPTERS if runtime == "python-torch" else _ADAPTERS).get(model)
    adapter = adapter or _ADAPTERS[model]
    return (
        f'"""Triton Python-backend entry point of {model}.\n\nThe adapter is {adapter}.\n"""\n'
        "\n"
        f"from {adapter} import TritonPythonModel\n"
        "\n"
        '__all__ = ["TritonPythonModel"]\n'
    )


def render_repository(
    runtime: Runtime = COMMITTED_RUNTIME, precision: str = "fp32", gpu: bool = False
) -> dict[str, str]:
    """Every committed file of the repository: relative path -> text.

    Args:
        runtime: The networks' runtime.
        precision: What the exported weights compute in (the ``precision`` parameter of
            both networks and the ensemble).
        gpu: ``python-torch``'s networks on GPU instances.
    """
    files = {
        f"{contract.CLASSIFIER_MODEL}/config.pbtxt": render_classifier_config(
            runtime, gpu=gpu, precision=precision
        ),
        f"{contract.DENSE_MODEL}/config.pbtxt": render_dense_config(
            runtime, gpu=gpu, precision=precision
        ),
        f"{contract.TILER_MODEL}/config.pbtxt": render_tiler_config(),
        f"{contract.ASSEMBLER_MODEL}/config.pbtxt": render_assembler_config(),
        f"{contract.ENSEMBLE_MODEL}/config.pbtxt": render_ensemble_config(precision),
        f"{contract.ENSEMBLE_MODEL}/{VERSION}/.gitkeep": "",
    }
    for model in (contract.TILER_MODEL, contract.ASSEMBLER_MODEL):
        files[f"{model}/{VERSION}/{MODEL_FILE}"] = model_source(model)
    for model in NETWORK_MODELS:
        if runtime in PYTHON_RUNTIMES:
            files[f"{model}/{VERSION}/{MODEL_FILE}"] = model_source(model, runtime)
        else:
            files[f"{model}/{VERSION}/.gitkeep"] = ""
    return files


def write_repository(
    root: Path,
    runtime: Runtime = COMMITTED_RUNTIME,
    precision: str = "fp32",
    gpu: bool = False,
) -> list[Path]:
    """Write the rendered files under ``root`` and drop the adapters of another runtime.

    Weights (model.onnx, model.plan, model.pt) are left alone: the caller writes the ones it
    needs. A network's ``model.py`` left from a Python runtime is removed for the other
    runtimes (and a ``.gitkeep`` for a Python one), so a version folder holds no stray adapter.

    Returns:
        The written paths.
    """
    written = []
    for relative, text in render_repository(runtime, precision, gpu).items():
        path = Path(root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    for model in NETWORK_MODELS:
        version_dir = Path(root) / model / VERSION
        stale = version_dir / (".gitkeep" if runtime in PYTHON_RUNTIMES else MODEL_FILE)
        if stale.exists():
            log.info("removing %s (not used by runtime %s)", stale, runtime)
            stale.unlink()
    scorer = Path(root) / contract.SLIDE_CLASSIFIER_FILE
    if scorer.exists():
        log.warning("removing %s: it was fitted on the previous weights' maps; refit it", scorer)
        scorer.unlink()
    log.info(
        "wrote %d repository files under %s (runtime %s, %s)",
        len(written),
        root,
        runtime,
        precision,
    )
    return written


DETECTOR_MODELS: Final = (contract.ENSEMBLE_MODEL, contract.DENSE_MODEL)
"""The models a client calls and whose parameters it reads."""


def set_detector_parameter(root: Path, key: str, value: str | None) -> list[Path]:
    """Set (``value``) or remove (None) a string parameter of both detectors' configs.

    The configs are parsed and printed with protobuf's ``text_format``, so they stay valid;
    each is replaced atomically. A running server sees the change after a restart.

    Raises:
        ExportError: a detector's config is missing or does not parse (file named).
    """
    from google.protobuf import text_format

    from wsi_tumor.fileio import write_text

    written = []
    for model in DETECTOR_MODELS:
        path = Path(root) / model / "config.pbtxt"
        try:
            config = text_format.Parse(path.read_text(encoding="utf-8"), _pb().ModelConfig())
        except (OSError, text_format.ParseError) as exc:
            raise ExportError(f"{path}: cannot read the model config ({exc})") from None
        if value is None:
            config.parameters.pop(key, None)
        else:
            config.parameters[key].string_value = value
        written.append(write_text(path, _text(config)))
    return written


def resolve_runtime(requested: str, fmt: str) -> Runtime:
    """Turn ``--runtime auto`` into a concrete runtime for an export ``fmt`` (onnx/tensorrt).

    ``auto`` gives tensorrt for a plan; for ONNX it gives onnxruntime when the local
    server's backend directory holds an onnxruntime backend, else python-onnxruntime.

    Raises:
        ConfigError: when the runtime does not fit the format, or is unknown.
    """
    from wsi_tumor.serving.local_server import find_backend_directory

    if fmt == "tensorrt":
        if requested not in ("auto", "tensorrt"):
            raise ConfigError(f"--format tensorrt needs --runtime tensorrt, got {requested}")
        return "tensorrt"
    if requested == "tensorrt":
        raise ConfigError("--runtime tensorrt needs --format tensorrt (a plan)")
    if requested in ("onnxruntime", "python-onnxruntime", "python-torch"):
        return requested  # type: ignore[return-value]
    if requested != "auto":
        raise ConfigError(f"unknown runtime {requested!r}")
    backends = find_backend_directory()
    if backends is not None and (backends / "onnxruntime").is_dir():
        log.info("runtime auto: %s has an onnxruntime backend", backends)
        return "onnxruntime"
    log.info("runtime auto: no onnxruntime backend in %s; using python-onnxruntime", backends)
    return "python-onnxruntime"
