"""The shared part of the Python-backend models that run a network (ONNX Runtime or torch).

Each subclass says which output it answers with and how one request's inputs are read and
validated (:meth:`OnnxRuntimeModel.request_inputs`); the ``python-torch`` adapters also
override :meth:`OnnxRuntimeModel.open_session`. This class opens the session once and
runs every request of a dynamic batch through :func:`wsi_tumor.serving.onnx_session.run_batched`
(same-shaped requests together), so a malformed request gets its own INVALID_ARG while the
others are answered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from wsi_tumor import contract
from wsi_tumor.serving.onnx_session import Inputs, Session, build_session, run_batched, validated
from wsi_tumor.serving.precision import check_graph_precision
from wsi_tumor.serving.triton_models.responses import error_response


class OnnxRuntimeModel:
    """Base of the ONNX Runtime adapters; subclasses set ``output`` and ``request_inputs``."""

    output: str = ""

    def initialize(self, args: dict[str, str]) -> None:
        """Open the model's session (:meth:`open_session`) once, at load."""
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.session = self.open_session(
            Path(args["model_repository"]) / args["model_version"],
            {key: str(value.get("string_value", "")) for key, value in parameters.items()},
            args.get("model_instance_kind", "CPU"),
            int(args.get("model_instance_device_id", "0")),
        )

    def open_session(
        self, version_dir: Path, parameters: dict[str, str], kind: str, device_id: int
    ) -> Session:
        """The ONNX file named by the ``onnx_file`` parameter (CUDA on GPU instances).

        The graph must be of the precision the ``precision`` parameter states (fp32 when
        absent): a repository whose parameter and weights disagree fails to load, with one
        line naming both.
        """
        path = version_dir / parameters["onnx_file"]
        check_graph_precision(path, parameters.get(contract.PRECISION_PARAMETER, ""))
        return build_session(path, kind, device_id)

    def request_inputs(self, request: Any) -> Inputs:
        """The validated input tensors of one request (raise RequestError when malformed)."""
        raise NotImplementedError

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer every request; a malformed one gets its own error."""
        try:
            inputs = [validated(self.request_inputs, request) for request in requests]
            results = run_batched(self.session, inputs, self.output)
        except Exception as exc:
            return [error_response(pb_utils, exc) for _ in requests]
        responses = []
        for result in results:
            if isinstance(result, Exception):
                responses.append(error_response(pb_utils, result))
            else:
                tensor = pb_utils.Tensor(self.output, result)
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses


def input_array(request: Any, name: str) -> Any:
    """The numpy array of input ``name`` of ``request``."""
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()
