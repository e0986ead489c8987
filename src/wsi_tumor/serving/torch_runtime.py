"""PyTorch execution of both networks for the Python-backend runtime ``python-torch``.

A Triton that has neither TensorRT nor onnxruntime-gpu (the nvidia-pytriton server, a GPU
machine whose image carries only torch) still serves on its GPU: ``wsi-export --runtime
python-torch`` writes the trained weights (``model.pt``, a state_dict) into both network
models, and their Python-backend adapters run them through :class:`TorchSession`:

- on a GPU instance (``KIND_GPU``): FP16 (``gpu_precision``, the GPU probe's fastest setting
  that stays within 1e-2 of FP32) and channels-last, batch norms folded into the
  convolutions;
- on a CPU instance: FP32 in the model's own layout (batch norms folded too), so its
  outputs equal ONNX Runtime's within 1e-4.

A session has the ``run(output_names, feed)`` signature of an ONNX Runtime session, so the
dynamic batch goes through the same :func:`wsi_tumor.serving.onnx_session.run_batched`
(same-shaped requests together, a malformed one answered alone) as the ONNX runtimes.
"""

from __future__ import annotations

import copy
import itertools
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from wsi_tumor import contract
from wsi_tumor.errors import ExportError
from wsi_tumor.models.checkpoint import load_model
from wsi_tumor.models.dense import dense_logits, normalise_nhwc
from wsi_tumor.models.resnet_fcn import TumorResNetFCN
from wsi_tumor.serving.repository import DEFAULT_GPU_PRECISION

log = logging.getLogger(__name__)

Network = Literal["classifier", "dense"]
GPU_PRECISIONS: Final = ("fp16", "fp32")
"""Arithmetic a GPU instance may run in (``gpu_precision`` parameter); CPU instances: fp32."""
_DTYPES: Final = {"fp16": torch.float16, "fp32": torch.float32}
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def fold_batch_norms(model: ModuleT) -> ModuleT:
    """A copy of ``model`` (eval mode) with every BatchNorm2d that follows a Conv2d folded in.

    torchvision's ResNet holds the pairs as sibling attributes (``conv1``/``bn1``,
    ``conv2``/``bn2``) or as neighbours in a Sequential (the stem, ``downsample``); each
    batch norm becomes an Identity and its conv gets the scaled weights and a bias.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        children = list(module.named_children())
        for (conv_name, conv), (bn_name, bn) in itertools.pairwise(children):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return folded


class TorchSession:
    """One network on one device, answering ``run(output_names, feed)`` like ONNX Runtime.

    Args:
        model: The trained network (not changed; a folded copy runs).
        network: ``classifier`` (patches -> probabilities) or ``dense`` (regions + cell
            mask -> probability grid).
        device: Where it runs.
        gpu_precision: fp16 or fp32 on a CUDA device; the CPU always runs fp32.

    Raises:
        ExportError: on an unknown network or precision.
    """

    def __init__(
        self,
        model: TumorResNetFCN,
        network: Network,
        device: torch.device,
        gpu_precision: str = DEFAULT_GPU_PRECISION,
    ) -> None:
        if network not in ("classifier", "dense"):
            raise ExportError(f"unknown network {network!r}: classifier or dense")
        if gpu_precision not in GPU_PRECISIONS:
            raise ExportError(f"gpu_precision {gpu_precision!r}: choose {GPU_PRECISIONS}")
        self.network = network
        self.device = device
        cuda = device.type == "cuda"
        self.precision = gpu_precision if cuda else "fp32"
        self.dtype = _DTYPES[self.precision]
        self.layout = torch.channels_last if cuda else torch.contiguous_format
        self.model = fold_batch_norms(model).to(device=device, dtype=self.dtype)
        self.model.to(memory_format=self.layout)
        log.info("torch %s session on %s in %s", network, device, self.precision)

    @classmethod
    def open(
        cls,
        weights: Path,
        network: Network,
        instance_kind: str = "CPU",
        device_id: int = 0,
        gpu_precision: str = DEFAULT_GPU_PRECISION,
    ) -> TorchSession:
        """Load ``weights`` (a checkpoint or state_dict) for a Triton instance.

        Args:
            weights: The exported ``model.pt``.
            network: Which network the model serves.
            instance_kind: Triton's ``model_instance_kind``; GPU uses CUDA device
                ``device_id`` when torch sees one (else the CPU, with a warning).
            device_id: Triton's ``model_instance_device_id``.
            gpu_precision: Arithmetic on the GPU.
        """
        device = torch.device("cpu")
        if instance_kind.upper() == "GPU":
            if torch.cuda.is_available():
                device = torch.device("cuda", device_id)
            else:
                log.warning("%s: a GPU instance but torch sees no CUDA device: CPU", weights)
        return cls(load_model(weights), network, device, gpu_precision)

    def run(
        self, output_names: Sequence[str] | None, feed: Mapping[str, npt.NDArray[np.generic]]
    ) -> list[npt.NDArray[np.float32]]:
        """The network's one output for ``feed`` (the contract's input tensors)."""
        with torch.inference_mode(), warnings.catch_warnings():
            # Triton's input arrays are read-only views of shared memory; nothing writes them
            warnings.filterwarnings("ignore", message=".*not writable", category=UserWarning)
            if self.network == "classifier":
                out = self._classify(torch.from_numpy(feed[contract.PATCHES_TENSOR]))
            else:
                regions = torch.from_numpy(feed[contract.REGIONS_TENSOR])
                out = self._dense(regions, torch.from_numpy(feed[contract.CELL_MASK_TENSOR]))
            return [out.cpu().numpy()]

    def _classify(self, patches: torch.Tensor) -> torch.Tensor:
        x = patches.to(self.device, non_blocking=True)
        x = x.to(dtype=self.dtype, memory_format=self.layout)
        return torch.sigmoid(self.model(x).float()).flatten(1)

    def _dense(self, regions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        images = normalise_nhwc(regions.to(self.device, non_blocking=True))
        images = images.to(dtype=self.dtype, memory_format=self.layout)
        logits = dense_logits(self.model, images).float()
        return torch.sigmoid(logits) * mask.to(self.device).to(torch.float32)
