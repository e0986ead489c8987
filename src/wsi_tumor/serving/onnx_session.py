"""ONNX Runtime execution for the Python-backend classifier (no torch).

Used by ``tumor_classifier``'s model.py when the server has no onnxruntime backend
(``wsi-export --runtime python-onnxruntime``): one session built at model load, and the
requests of a dynamic batch run as one concatenated batch whose output is split back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.errors import RequestError

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

PATCH_SHAPE = (contract.CHANNELS, contract.PATCH_SIZE, contract.PATCH_SIZE)


def build_session(
    model_path: Path, instance_kind: str = "CPU", device_id: int = 0
) -> onnxruntime.InferenceSession:
    """Open ``model_path`` with the CUDA provider for GPU instances when it exists, else CPU.

    Args:
        model_path: The exported ``model.onnx``.
        instance_kind: Triton's ``model_instance_kind`` ("CPU" or "GPU").
        device_id: Triton's ``model_instance_device_id`` for GPU instances.
    """
    import onnxruntime

    providers: list[str | tuple[str, dict[str, int]]] = ["CPUExecutionProvider"]
    available = onnxruntime.get_available_providers()
    if instance_kind.upper() == "GPU" and "CUDAExecutionProvider" in available:
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
    session = onnxruntime.InferenceSession(str(model_path), providers=providers)
    log.info("onnxruntime session on %s with %s", model_path, session.get_providers())
    return session


def validate_patches(patches: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
    """Check one classifier request: FP32 [B, 3, 224, 224] with B >= 1.

    Raises:
        RequestError: naming the tensor and the wrong dtype or shape.
    """
    name = contract.PATCHES_TENSOR
    if patches.dtype != np.float32:
        raise RequestError(f"{name}: dtype must be float32, got {patches.dtype}")
    if patches.ndim != 4 or tuple(patches.shape[1:]) != PATCH_SHAPE:
        raise RequestError(
            f"{name}: shape must be [B, {', '.join(map(str, PATCH_SHAPE))}], "
            f"got {list(patches.shape)}"
        )
    if patches.shape[0] < 1:
        raise RequestError(f"{name}: the request holds no patch (B = 0)")
    return patches.astype(np.float32, copy=False)


def run_batched(
    session: onnxruntime.InferenceSession,
    batches: Sequence[npt.NDArray[np.generic]],
) -> list[npt.NDArray[np.float32] | RequestError]:
    """Run the valid requests of a dynamic batch as one session call and split the result.

    Args:
        session: From :func:`build_session`.
        batches: The ``patches`` input of each request.

    Returns:
        Per request, in order: FP32 [B_i, 1] probabilities, or the RequestError that
        request alone gets (the others are still computed).
    """
    results: list[npt.NDArray[np.float32] | RequestError] = []
    valid: list[npt.NDArray[np.float32]] = []
    for batch in batches:
        try:
            valid.append(validate_patches(batch))
            results.append(np.empty((0, 1), np.float32))
        except RequestError as exc:
            results.append(exc)
    if not valid:
        return results
    joined = valid[0] if len(valid) == 1 else np.concatenate(valid, axis=0)
    (probabilities,) = session.run(
        [contract.PROBABILITIES_TENSOR], {contract.PATCHES_TENSOR: joined}
    )
    probabilities = np.asarray(probabilities, dtype=np.float32)
    start = 0
    sizes = iter(len(v) for v in valid)
    for i, result in enumerate(results):
        if isinstance(result, RequestError):
            continue
        size = next(sizes)
        results[i] = probabilities[start : start + size]
        start += size
    return results
