"""Triton Python backend ``tumor_detector_dense``: the dense ONNX graph with ONNX Runtime.

Written by ``wsi-export --runtime python-onnxruntime`` for servers without the onnxruntime
backend. The graph normalises the uint8 regions itself; this adapter only checks each
request (dtype, a side of 224 + (k - 1) * 64 px, the mask's shape, k in the model's range)
so a malformed one gets INVALID_ARG naming the problem, and runs same-shaped requests of a
dynamic batch together.
"""

from __future__ import annotations

from typing import Any

from wsi_tumor import contract
from wsi_tumor.serving.onnx_session import Inputs
from wsi_tumor.serving.tiling import validate_regions
from wsi_tumor.serving.triton_models.onnxruntime_model import OnnxRuntimeModel, input_array


class TritonPythonModel(OnnxRuntimeModel):
    """Regions UINT8 [N, H, W, 3] + cell_mask BOOL [N, k, k] -> probability_grid [N, k, k]."""

    output = contract.GRID_TENSOR

    def request_inputs(self, request: Any) -> Inputs:
        """The request's validated ``regions`` and ``cell_mask``."""
        regions = input_array(request, contract.REGIONS_TENSOR)
        mask = input_array(request, contract.CELL_MASK_TENSOR)
        validate_regions(regions, mask, (contract.DENSE_MIN_CELLS, contract.DENSE_MAX_CELLS))
        return {contract.REGIONS_TENSOR: regions, contract.CELL_MASK_TENSOR: mask}
