"""``wsi-export --runtime python-torch``: the weights for PyTorch in Triton's Python backend.

No ONNX graph: both network models get the checkpoint's state_dict (``model.pt``) and the
adapters run it with :class:`wsi_tumor.serving.torch_runtime.TorchSession`. The check runs
that very session (batch norms folded, as served) against the plain PyTorch model on the
parity patches and regions: FP32 on the CPU within the ONNX tolerance (1e-4), and, when the
instances are GPU ones and this machine has a GPU, FP16 channels-last on it within
:data:`GPU_FP16_TOLERANCE`. As for ONNX, the weights are checked in a staging folder and moved
into the repository only once every check passed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from wsi_tumor import contract
from wsi_tumor.errors import ConfigError
from wsi_tumor.export import parity
from wsi_tumor.models.resnet_fcn import TumorResNetFCN
from wsi_tumor.serving.repository import (
    DEFAULT_GPU_PRECISION,
    NETWORK_MODELS,
    TORCH_FILE,
    VERSION,
    write_repository,
)
from wsi_tumor.serving.torch_runtime import TorchSession

log = logging.getLogger(__name__)

GPU_FP16_TOLERANCE: Final = 1e-2
"""Max |probability difference| of the GPU's FP16 channels-last session against FP32 (the GPU
probe's bound for fp16: an 11-bit significand through ~20 layers)."""
INSTANCE_KINDS: Final = ("auto", "cpu", "gpu")


class TorchExport(NamedTuple):
    """What :func:`export_torch` wrote and measured.

    Attributes:
        weights: The classifier's ``model.pt`` (the dense model's holds the same weights).
        classifier_diff: Max |probability diff| of the served CPU session vs PyTorch.
        dense_diff: The same for the dense grids.
        gpu_diff: The GPU FP16 session vs FP32 (None when not checked).
    """

    weights: Path
    classifier_diff: float
    dense_diff: float
    gpu_diff: float | None


def gpu_instances(kind: str) -> bool:
    """Whether ``--instance-kind`` means GPU instances (``auto``: this machine has a GPU).

    Raises:
        ConfigError: on an unknown kind.
    """
    if kind not in INSTANCE_KINDS:
        raise ConfigError(f"--instance-kind {kind!r}: choose one of {', '.join(INSTANCE_KINDS)}")
    return kind == "gpu" or (kind == "auto" and torch.cuda.is_available())


def _session_outputs(
    model: TumorResNetFCN,
    device: torch.device,
    inputs: npt.NDArray[np.float32],
    regions: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]],
) -> tuple[npt.NDArray[np.float32], list[npt.NDArray[np.float32]]]:
    """Served probabilities of the parity patches and grids of the parity regions."""
    classifier = TorchSession(model, "classifier", device, DEFAULT_GPU_PRECISION)
    dense = TorchSession(model, "dense", device, DEFAULT_GPU_PRECISION)
    (probabilities,) = classifier.run(None, {contract.PATCHES_TENSOR: inputs})
    grids = [
        dense.run(None, {contract.REGIONS_TENSOR: pixels, contract.CELL_MASK_TENSOR: mask})[0]
        for pixels, mask in regions
    ]
    return probabilities, grids


def _check(
    reference: tuple[npt.NDArray[np.float32], list[npt.NDArray[np.float32]]],
    candidate: tuple[npt.NDArray[np.float32], list[npt.NDArray[np.float32]]],
    tolerance: float,
    what: str,
) -> tuple[float, float]:
    """Worst |diff| of the classifier and of the dense grids (ExportError above tolerance)."""
    classifier = parity.check_parity(reference[0], candidate[0], tolerance, f"{what} (classifier)")
    dense = max(
        parity.check_parity(want, got, tolerance, f"{what} (dense, k = {want.shape[1]})")
        for want, got in zip(reference[1], candidate[1], strict=True)
    )
    return classifier, dense


def export_torch(
    model: TumorResNetFCN,
    repository: Path,
    gpu: bool,
    parity_slide: Path | None = None,
    parity_patches: int = 32,
    tolerance: float | None = None,
) -> TorchExport:
    """Write, check and install ``model.pt`` for both networks; render the repository.

    Args:
        model: The loaded network (eval mode, CPU).
        repository: The resolved repository root (exists).
        gpu: Render KIND_GPU instances (and check the FP16 session when a GPU is here).
        parity_slide: Where the parity patches come from (None: the real H&E sample).
        parity_patches: How many.
        tolerance: Max |diff| of the CPU session (None: the ONNX tolerance, 1e-4).

    Raises:
        ExportError: a session differs beyond its tolerance.
    """
    inputs = parity.to_network_input(parity.sample_patches(parity_slide, parity_patches))
    regions = parity.sample_regions(parity_slide, max(2, parity_patches // 8))
    reference = (
        parity.torch_probabilities(model, inputs),
        [parity.torch_dense(model, pixels, mask) for pixels, mask in regions],
    )
    served = _session_outputs(model, torch.device("cpu"), inputs, regions)
    classifier_diff, dense_diff = _check(
        reference, served, tolerance or parity.FP32_TOLERANCE, "torch session vs PyTorch"
    )
    gpu_diff = None
    if gpu and torch.cuda.is_available():
        fp16 = _session_outputs(model, torch.device("cuda"), inputs, regions)
        gpu_diff = max(_check(reference, fp16, GPU_FP16_TOLERANCE, "FP16 on the GPU vs FP32"))
    elif gpu:
        log.warning("GPU instances rendered, but no GPU here: the FP16 session is not checked")
    with tempfile.TemporaryDirectory(prefix=".wsi-export-", dir=repository.parent) as tmp:
        staged = Path(tmp) / TORCH_FILE
        torch.save(model.state_dict(), staged)
        for name in NETWORK_MODELS:
            version_dir = repository / name / VERSION
            version_dir.mkdir(parents=True, exist_ok=True)
            copy = Path(tmp) / f"{name}.pt"
            copy.write_bytes(staged.read_bytes())
            os.replace(copy, version_dir / TORCH_FILE)
    write_repository(repository, "python-torch", "fp16" if gpu else "fp32", gpu=gpu)
    weights = repository / contract.CLASSIFIER_MODEL / VERSION / TORCH_FILE
    log.info("python-torch: %s instances", "GPU" if gpu else "CPU")
    return TorchExport(weights, classifier_diff, dense_diff, gpu_diff)
