"""ONNX Runtime execution for the Python-backend classifier (no torch).

Used by the Python-backend ``tumor_classifier`` and ``tumor_detector_dense`` when the server
has no onnxruntime backend (``wsi-export --runtime python-onnxruntime``): one session built
at model load, and the requests of a dynamic batch run as concatenated batches (one per
tensor shape) whose output is split back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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


Inputs = dict[str, npt.NDArray[np.generic]]
"""One request's input tensors by name (batch first)."""


class Session(Protocol):
    """What :func:`run_batched` calls: an ONNX Runtime session, or a
    :class:`wsi_tumor.serving.torch_runtime.TorchSession`."""

    def run(self, output_names: Any, input_feed: Any, /) -> Sequence[Any]:
        """The requested outputs for the named inputs."""
        ...


def run_batched(
    session: Session,
    requests: Sequence[Inputs | RequestError],
    output: str,
) -> list[npt.NDArray[np.float32] | RequestError]:
    """Run the valid requests of a dynamic batch together and split the result.

    Requests whose tensors have the same shapes (batch axis aside) are concatenated into
    one session call; a malformed request (passed in as its RequestError) gets that error
    alone while the others are computed.

    Args:
        session: From :func:`build_session` (or a torch session).
        requests: Per request, its validated inputs or the RequestError it earned.
        output: The output tensor to fetch.

    Returns:
        Per request, in order: its rows of ``output``, or its RequestError.
    """
    results: list[npt.NDArray[np.float32] | RequestError] = [
        r if isinstance(r, RequestError) else np.empty(0, np.float32) for r in requests
    ]
    groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
    for index, request in enumerate(requests):
        if not isinstance(request, RequestError):
            key = tuple(tuple(tensor.shape[1:]) for _, tensor in sorted(request.items()))
            groups.setdefault(key, []).append(index)
    for members in groups.values():
        names = list(requests[members[0]])  # type: ignore[arg-type]
        feed = {
            name: np.concatenate([requests[i][name] for i in members])  # type: ignore[index]
            if len(members) > 1
            else requests[members[0]][name]  # type: ignore[index]
            for name in names
        }
        (joined,) = session.run([output], feed)
        joined = np.asarray(joined, dtype=np.float32)
        start = 0
        for i in members:
            size = len(requests[i][names[0]])  # type: ignore[index]
            results[i] = joined[start : start + size]
            start += size
    return results


def validated(check: Callable[[Any], Inputs], request: Any) -> Inputs | RequestError:
    """``check(request)``'s inputs, or the RequestError it raised (for that request alone)."""
    try:
        return check(request)
    except RequestError as exc:
        return exc
