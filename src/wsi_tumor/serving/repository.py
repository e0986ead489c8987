"""Render and write the Triton model repository from the contract (never hand-copied).

Four models: ``patch_tiler`` and ``grid_assembler`` (Python backend, non-batching),
``tumor_classifier`` (onnxruntime, tensorrt or a Python backend running ONNX Runtime,
batching with dynamic batching) and the ensemble ``tumor_detector``, which is the same for
every runtime. The committed ``model_repository/`` is :func:`render_repository` with
:data:`COMMITTED_RUNTIME`; weights (model.onnx, model.plan) are written by ``wsi-export``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal, get_args

from wsi_tumor import contract
from wsi_tumor.errors import ConfigError, ExportError
from wsi_tumor.serving.limits import (
    MAX_PATCHES_PER_REQUEST,
    MAX_QUEUE_DELAY_US,
    PREFERRED_BATCH_SIZES,
)

log = logging.getLogger(__name__)

Runtime = Literal["onnxruntime", "tensorrt", "python-onnxruntime"]
RUNTIMES: Final[tuple[str, ...]] = get_args(Runtime)
COMMITTED_RUNTIME: Final = "onnxruntime"
"""Runtime of the committed repository: the standard layout for NVIDIA's containers."""
VERSION: Final = "1"
ONNX_FILE: Final = "model.onnx"
PLAN_FILE: Final = "model.plan"
MODEL_FILE: Final = "model.py"

_PATCH_DIMS = (contract.CHANNELS, contract.PATCH_SIZE, contract.PATCH_SIZE)
_ADAPTERS = {
    contract.TILER_MODEL: "wsi_tumor.serving.triton_models.patch_tiler",
    contract.ASSEMBLER_MODEL: "wsi_tumor.serving.triton_models.grid_assembler",
    contract.CLASSIFIER_MODEL: "wsi_tumor.serving.triton_models.tumor_classifier_onnxruntime",
}


def _dims(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor(name: str, dtype: str, dims: Sequence[int]) -> str:
    return f'  {{ name: "{name}", data_type: {dtype}, dims: {_dims(dims)} }}'


def _io(inputs: Sequence[str], outputs: Sequence[str]) -> str:
    return "input [\n" + ",\n".join(inputs) + "\n]\noutput [\n" + ",\n".join(outputs) + "\n]\n"


def _parameter(key: str, value: str) -> str:
    return f'parameters {{ key: "{key}", value: {{ string_value: "{value}" }} }}\n'


def render_classifier_config(
    runtime: Runtime = COMMITTED_RUNTIME, max_batch_size: int = MAX_PATCHES_PER_REQUEST
) -> str:
    """config.pbtxt of ``tumor_classifier`` for ``runtime``.

    Args:
        runtime: "onnxruntime" (NVIDIA's onnxruntime backend), "tensorrt" (a plan, GPU
            instances) or "python-onnxruntime" (Python backend running model.onnx).
        max_batch_size: The batch limit; a TensorRT plan's profile must reach it.

    Raises:
        ExportError: on an unknown runtime or a non-positive batch size.
    """
    if runtime not in RUNTIMES:
        raise ExportError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if max_batch_size < 1:
        raise ExportError(f"tumor_classifier max_batch_size must be >= 1, got {max_batch_size}")
    preferred = [b for b in PREFERRED_BATCH_SIZES if b <= max_batch_size] or [max_batch_size]
    if runtime == "onnxruntime":
        head = f'backend: "onnxruntime"\ndefault_model_filename: "{ONNX_FILE}"\n'
        instances = "instance_group [ { count: 1 } ]\n"
    elif runtime == "tensorrt":
        head = f'backend: "tensorrt"\ndefault_model_filename: "{PLAN_FILE}"\n'
        instances = "instance_group [ { count: 1, kind: KIND_GPU } ]\n"
    else:
        head = 'backend: "python"\n' + _parameter("onnx_file", ONNX_FILE)
        instances = "instance_group [ { count: 1 } ]\n"
    p = contract.PATCHES_TENSOR
    return (
        f'name: "{contract.CLASSIFIER_MODEL}"\n{head}max_batch_size: {max_batch_size}\n'
        + _io(
            [_tensor(p, "TYPE_FP32", _PATCH_DIMS)],
            [_tensor(contract.PROBABILITIES_TENSOR, "TYPE_FP32", [1])],
        )
        + "dynamic_batching {\n"
        f"  preferred_batch_size: {_dims(preferred)}\n"
        f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}\n}}\n"
        + instances
        + "model_warmup [\n  {\n"
        '    name: "one_zero_patch"\n    batch_size: 1\n'
        f'    inputs {{ key: "{p}", value: {{ data_type: TYPE_FP32, '
        f"dims: {_dims(_PATCH_DIMS)}, zero_data: true }} }}\n  }}\n]\n"
    )


def render_tiler_config(max_patches: int = MAX_PATCHES_PER_REQUEST) -> str:
    """config.pbtxt of ``patch_tiler`` (Python backend, max_batch_size 0)."""
    return (
        f'name: "{contract.TILER_MODEL}"\nbackend: "python"\nmax_batch_size: 0\n'
        + _io(
            [
                _tensor(contract.REGIONS_TENSOR, "TYPE_UINT8", [-1, -1, -1, contract.CHANNELS]),
                _tensor(contract.CELL_MASK_TENSOR, "TYPE_BOOL", [-1, -1, -1]),
            ],
            [_tensor(contract.PATCHES_TENSOR, "TYPE_FP32", [-1, *_PATCH_DIMS])],
        )
        + _parameter("max_patches", str(max_patches))
        + "instance_group [ { count: 2, kind: KIND_CPU } ]\n"
    )


def render_assembler_config() -> str:
    """config.pbtxt of ``grid_assembler`` (Python backend, max_batch_size 0)."""
    return (
        f'name: "{contract.ASSEMBLER_MODEL}"\nbackend: "python"\nmax_batch_size: 0\n'
        + _io(
            [
                _tensor(contract.PROBABILITIES_TENSOR, "TYPE_FP32", [-1, 1]),
                _tensor(contract.CELL_MASK_TENSOR, "TYPE_BOOL", [-1, -1, -1]),
            ],
            [_tensor(contract.GRID_TENSOR, "TYPE_FP32", [-1, -1, -1])],
        )
        + "instance_group [ { count: 1, kind: KIND_CPU } ]\n"
    )


def _step(model: str, inputs: Sequence[str], outputs: Sequence[str]) -> str:
    maps = [f'input_map {{ key: "{t}", value: "{t}" }}' for t in inputs]
    maps += [f'output_map {{ key: "{t}", value: "{t}" }}' for t in outputs]
    body = "\n".join(f"      {m}" for m in maps)
    return f'    {{\n      model_name: "{model}"\n      model_version: -1\n{body}\n    }}'


def render_ensemble_config() -> str:
    """config.pbtxt of the ensemble ``tumor_detector`` (identical for every runtime)."""
    regions, mask = contract.REGIONS_TENSOR, contract.CELL_MASK_TENSOR
    patches, probs = contract.PATCHES_TENSOR, contract.PROBABILITIES_TENSOR
    steps = [
        _step(contract.TILER_MODEL, [regions, mask], [patches]),
        _step(contract.CLASSIFIER_MODEL, [patches], [probs]),
        _step(contract.ASSEMBLER_MODEL, [probs, mask], [contract.GRID_TENSOR]),
    ]
    return (
        f'name: "{contract.ENSEMBLE_MODEL}"\nplatform: "ensemble"\nmax_batch_size: 0\n'
        + _io(
            [
                _tensor(regions, "TYPE_UINT8", [-1, -1, -1, contract.CHANNELS]),
                _tensor(mask, "TYPE_BOOL", [-1, -1, -1]),
            ],
            [_tensor(contract.GRID_TENSOR, "TYPE_FP32", [-1, -1, -1])],
        )
        + "ensemble_scheduling {\n  step [\n"
        + ",\n".join(steps)
        + "\n  ]\n}\n"
    )


def model_source(model: str) -> str:
    """The model.py Triton loads for ``model``: an entry point importing the packaged adapter.

    The adapter itself lives once, in ``wsi_tumor.serving.triton_models``; the repository only
    names it, so the server's Python must import wsi_tumor (see model_repository/README.md).
    """
    adapter = _ADAPTERS[model]
    return (
        f'"""Triton Python-backend entry point of {model}.\n\nThe adapter is {adapter}.\n"""\n'
        "\n"
        f"from {adapter} import TritonPythonModel\n"
        "\n"
        '__all__ = ["TritonPythonModel"]\n'
    )


def render_repository(runtime: Runtime = COMMITTED_RUNTIME) -> dict[str, str]:
    """Every committed file of the repository: relative path -> text."""
    files = {
        f"{contract.CLASSIFIER_MODEL}/config.pbtxt": render_classifier_config(runtime),
        f"{contract.TILER_MODEL}/config.pbtxt": render_tiler_config(),
        f"{contract.ASSEMBLER_MODEL}/config.pbtxt": render_assembler_config(),
        f"{contract.ENSEMBLE_MODEL}/config.pbtxt": render_ensemble_config(),
        f"{contract.TILER_MODEL}/{VERSION}/{MODEL_FILE}": model_source(contract.TILER_MODEL),
        f"{contract.ASSEMBLER_MODEL}/{VERSION}/{MODEL_FILE}": model_source(
            contract.ASSEMBLER_MODEL
        ),
        f"{contract.ENSEMBLE_MODEL}/{VERSION}/.gitkeep": "",
    }
    if runtime == "python-onnxruntime":
        files[f"{contract.CLASSIFIER_MODEL}/{VERSION}/{MODEL_FILE}"] = model_source(
            contract.CLASSIFIER_MODEL
        )
    else:
        files[f"{contract.CLASSIFIER_MODEL}/{VERSION}/.gitkeep"] = ""
    return files


def write_repository(root: Path, runtime: Runtime = COMMITTED_RUNTIME) -> list[Path]:
    """Write the rendered files under ``root`` and drop the adapter of another runtime.

    Weights (model.onnx, model.plan) are left alone: the caller writes the ones it needs.
    A classifier ``model.py`` left from ``python-onnxruntime`` is removed for the other
    runtimes, so the version folder holds no stray adapter.

    Returns:
        The written paths.
    """
    written = []
    for relative, text in render_repository(runtime).items():
        path = Path(root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    version_dir = Path(root) / contract.CLASSIFIER_MODEL / VERSION
    stale = version_dir / (".gitkeep" if runtime == "python-onnxruntime" else MODEL_FILE)
    if stale.exists():
        log.info("removing %s (not used by runtime %s)", stale, runtime)
        stale.unlink()
    log.info("wrote %d repository files under %s (runtime %s)", len(written), root, runtime)
    return written


def find_backend_directory() -> Path | None:
    """The backend directory the local tritonserver loads backends from, if found.

    Looks at ``$TRITON_BACKEND_DIRECTORY``, the ``.triton/backends`` beside this project's
    launcher (``.venv/bin/tritonserver``), then ``<server prefix>/backends`` and
    ``/opt/tritonserver/backends`` (NVIDIA's containers).
    """
    from wsi_tumor.errors import ServerError
    from wsi_tumor.serving.local_server import find_tritonserver

    candidates: list[Path] = []
    if os.environ.get("TRITON_BACKEND_DIRECTORY"):
        candidates.append(Path(os.environ["TRITON_BACKEND_DIRECTORY"]))
    try:
        launcher = find_tritonserver()
        candidates.append(launcher.parent.parent.parent / ".triton" / "backends")
        candidates.append(launcher.resolve().parent.parent / "backends")
    except ServerError:
        pass
    candidates.append(Path("/opt/tritonserver/backends"))
    return next((c for c in candidates if c.is_dir()), None)


def resolve_runtime(requested: str, fmt: str) -> Runtime:
    """Turn ``--runtime auto`` into a concrete runtime for an export ``fmt`` (onnx/tensorrt).

    ``auto`` gives tensorrt for a plan; for ONNX it gives onnxruntime when the local
    server's backend directory holds an onnxruntime backend, else python-onnxruntime.

    Raises:
        ConfigError: when the runtime does not fit the format, or is unknown.
    """
    if fmt == "tensorrt":
        if requested not in ("auto", "tensorrt"):
            raise ConfigError(f"--format tensorrt needs --runtime tensorrt, got {requested}")
        return "tensorrt"
    if requested == "tensorrt":
        raise ConfigError("--runtime tensorrt needs --format tensorrt (a plan)")
    if requested in ("onnxruntime", "python-onnxruntime"):
        return requested  # type: ignore[return-value]
    if requested != "auto":
        raise ConfigError(f"unknown runtime {requested!r}")
    backends = find_backend_directory()
    if backends is not None and (backends / "onnxruntime").is_dir():
        log.info("runtime auto: %s has an onnxruntime backend", backends)
        return "onnxruntime"
    log.info("runtime auto: no onnxruntime backend in %s; using python-onnxruntime", backends)
    return "python-onnxruntime"
