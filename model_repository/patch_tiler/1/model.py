"""Triton Python backend ``patch_tiler``: regions + cell mask -> normalised CHW patches.

Thin adapter over :func:`wsi_tumor.serving.tiling.tile_regions`; wsi_tumor must be
importable by the server's Python (see model_repository/README.md).
"""

from __future__ import annotations

import json
from typing import Any

import triton_python_backend_utils as pb_utils

from wsi_tumor import contract
from wsi_tumor.serving.tiling import tile_regions
from wsi_tumor.serving.triton_models.responses import error_response


class TritonPythonModel:
    """Cuts one request's regions into the patches of its true mask cells."""

    def initialize(self, args: dict[str, str]) -> None:
        """Read the patch limit from the config's ``max_patches`` parameter."""
        config = json.loads(args["model_config"])
        self.max_patches = int(config["parameters"]["max_patches"]["string_value"])

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer each request with its patches, or with its own INVALID_ARG error."""
        responses = []
        for request in requests:
            try:
                regions = pb_utils.get_input_tensor_by_name(request, contract.REGIONS_TENSOR)
                mask = pb_utils.get_input_tensor_by_name(request, contract.CELL_MASK_TENSOR)
                patches = tile_regions(regions.as_numpy(), mask.as_numpy(), self.max_patches)
                output = pb_utils.Tensor(contract.PATCHES_TENSOR, patches)
                responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            except Exception as exc:
                responses.append(error_response(pb_utils, exc))
        return responses
