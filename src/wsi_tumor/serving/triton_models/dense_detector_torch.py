"""Triton Python backend ``tumor_detector_dense`` for ``wsi-export --runtime python-torch``:
model.pt's fully convolutional pass run by PyTorch (FP16 channels-last on a GPU instance, FP32
on a CPU one), with the ONNX Runtime adapter's request checks and dynamic batching."""

from __future__ import annotations

from wsi_tumor.serving.triton_models.dense_detector_onnxruntime import (
    TritonPythonModel as OnnxDense,
)
from wsi_tumor.serving.triton_models.torch_model import TorchModel


class TritonPythonModel(TorchModel, OnnxDense):
    """Regions UINT8 [N, H, W, 3] + cell_mask BOOL [N, k, k] -> probability_grid [N, k, k]."""

    network = "dense"
