"""Triton Python backend ``tumor_classifier``: runs model.onnx with ONNX Runtime.

Written by ``wsi-export --runtime python-onnxruntime`` for servers without the onnxruntime
backend. The session is built once; the requests of a dynamic batch run as one batch.
"""

from __future__ import annotations

from typing import Any

from wsi_tumor import contract
from wsi_tumor.serving.onnx_session import Inputs, validate_patches
from wsi_tumor.serving.triton_models.onnxruntime_model import OnnxRuntimeModel, input_array


class TritonPythonModel(OnnxRuntimeModel):
    """The patch classifier: FP32 patches [B, 3, 224, 224] -> probabilities [B, 1]."""

    output = contract.PROBABILITIES_TENSOR

    def request_inputs(self, request: Any) -> Inputs:
        """The request's validated ``patches``."""
        patches = input_array(request, contract.PATCHES_TENSOR)
        return {contract.PATCHES_TENSOR: validate_patches(patches)}
