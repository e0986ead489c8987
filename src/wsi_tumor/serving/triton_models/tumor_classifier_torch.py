"""Triton Python backend ``tumor_classifier`` for ``wsi-export --runtime python-torch``:
model.pt run by PyTorch (FP16 channels-last on a GPU instance, FP32 on a CPU one), with the
ONNX Runtime adapter's request checks and dynamic batching."""

from __future__ import annotations

from wsi_tumor.serving.triton_models.torch_model import TorchModel
from wsi_tumor.serving.triton_models.tumor_classifier_onnxruntime import (
    TritonPythonModel as OnnxClassifier,
)


class TritonPythonModel(TorchModel, OnnxClassifier):
    """The patch classifier: FP32 patches [B, 3, 224, 224] -> probabilities [B, 1]."""

    network = "classifier"
