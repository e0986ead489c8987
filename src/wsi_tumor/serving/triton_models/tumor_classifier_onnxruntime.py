"""Triton Python backend ``tumor_classifier``: runs model.onnx with ONNX Runtime.

Written by ``wsi-export --runtime python-onnxruntime`` for servers without the onnxruntime
backend. The session is built once; the requests of a dynamic batch run as one batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from wsi_tumor import contract
from wsi_tumor.serving.onnx_session import build_session, run_batched
from wsi_tumor.serving.triton_models.responses import error_response


class TritonPythonModel:
    """The patch classifier: FP32 patches [B, 3, 224, 224] -> probabilities [B, 1]."""

    def initialize(self, args: dict[str, str]) -> None:
        """Open the ONNX file named by the ``onnx_file`` parameter (CUDA on GPU instances)."""
        config = json.loads(args["model_config"])
        filename = config["parameters"]["onnx_file"]["string_value"]
        path = Path(args["model_repository"]) / args["model_version"] / filename
        self.session = build_session(
            path,
            args.get("model_instance_kind", "CPU"),
            int(args.get("model_instance_device_id", "0")),
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        """Classify all requests together; a malformed one gets its own error."""
        try:
            batches = [
                pb_utils.get_input_tensor_by_name(r, contract.PATCHES_TENSOR).as_numpy()
                for r in requests
            ]
            results = run_batched(self.session, batches)
        except Exception as exc:
            return [error_response(pb_utils, exc) for _ in requests]
        responses = []
        for result in results:
            if isinstance(result, Exception):
                responses.append(error_response(pb_utils, result))
            else:
                output = pb_utils.Tensor(contract.PROBABILITIES_TENSOR, result)
                responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
