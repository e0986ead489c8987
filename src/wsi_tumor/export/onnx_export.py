"""Export TumorResNetFCN to ONNX: patches [B, 3, 224, 224] -> probabilities [B, 1]."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from wsi_tumor import contract
from wsi_tumor.errors import ExportError

log = logging.getLogger(__name__)

OPSET = 18
_CHATTY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx")


class ProbabilityHead(nn.Module):
    """Wrap the network so it returns sigmoid(logit) flattened to [B, 1]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Probabilities [B, 1] of normalised patches [B, 3, 224, 224]."""
        return torch.sigmoid(self.model(patches)).flatten(1)


def example_input(batch: int = 2) -> torch.Tensor:
    """A random normalised patch batch of the contract's shape."""
    shape = (batch, contract.CHANNELS, contract.PATCH_SIZE, contract.PATCH_SIZE)
    return torch.rand(shape) * 2 - 1


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """Hide the dynamo exporter's per-pass INFO lines (onnxscript, onnx_ir) during export."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(model: nn.Module, path: Path) -> str:
    """Write ``path`` with a dynamic batch axis and check it with ``onnx.checker``.

    Tries the dynamo exporter first (torch's default path, needs onnxscript) and falls back
    to the TorchScript exporter when it fails, logging why.

    Returns:
        "dynamo" or "torchscript": the exporter that produced the file.

    Raises:
        ExportError: when both exporters fail or the checker rejects the graph.
    """
    import onnx

    head = ProbabilityHead(model).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    input_names, output_names = [contract.PATCHES_TENSOR], [contract.PROBABILITIES_TENSOR]
    args = (example_input(),)
    exporter = "dynamo"
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        with torch.no_grad(), warnings.catch_warnings(), _quiet_loggers():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                head,
                args,
                dynamo=True,
                opset_version=OPSET,
                external_data=False,
                dynamic_shapes={"patches": {0: batch}},
                input_names=input_names,
                output_names=output_names,
                verbose=False,
            )
        if program is None:
            raise ExportError("the dynamo exporter returned no program")
        program.save(str(path))
    except Exception as exc:
        log.warning("dynamo ONNX export failed (%s); using the TorchScript exporter", exc)
        exporter = "torchscript"
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    head,
                    args,
                    str(path),
                    dynamo=False,
                    opset_version=OPSET,
                    dynamic_axes={
                        contract.PATCHES_TENSOR: {0: "batch"},
                        contract.PROBABILITIES_TENSOR: {0: "batch"},
                    },
                    input_names=input_names,
                    output_names=output_names,
                )
        except Exception as exc2:
            raise ExportError(f"{path}: ONNX export failed with both exporters: {exc2}") from exc2
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"{path}: onnx.checker rejects the exported graph: {exc}") from exc
    _check_signature(path)
    log.info("exported %s with the %s exporter", path, exporter)
    return exporter


def _check_signature(path: Path) -> None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    if inputs != [contract.PATCHES_TENSOR] or outputs != [contract.PROBABILITIES_TENSOR]:
        raise ExportError(f"{path}: graph has inputs {inputs} and outputs {outputs}")
    dim0 = graph.input[0].type.tensor_type.shape.dim[0]
    if dim0.HasField("dim_value"):
        raise ExportError(f"{path}: batch axis is fixed at {dim0.dim_value}, not dynamic")
