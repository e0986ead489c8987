"""Triton Python backend ``grid_assembler``: probabilities + cell mask -> probability grid.

Thin adapter over :func:`wsi_tumor.serving.tiling.assemble_grid`.
"""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from wsi_tumor import contract
from wsi_tumor.serving.tiling import assemble_grid
from wsi_tumor.serving.triton_models.responses import error_response


class TritonPythonModel:
    """Scatters each request's patch probabilities back onto its regions' cell grids."""

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer each request with its grid, or with its own INVALID_ARG error."""
        responses = []
        for request in requests:
            try:
                probs = pb_utils.get_input_tensor_by_name(request, contract.PROBABILITIES_TENSOR)
                mask = pb_utils.get_input_tensor_by_name(request, contract.CELL_MASK_TENSOR)
                grid = assemble_grid(probs.as_numpy(), mask.as_numpy())
                output = pb_utils.Tensor(contract.GRID_TENSOR, grid)
                responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            except Exception as exc:
                responses.append(error_response(pb_utils, exc))
        return responses
