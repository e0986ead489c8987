"""Export the networks to ONNX: the patch classifier and the dense whole-region model.

- ``tumor_classifier``: ``patches`` FP32 [B, 3, 224, 224] -> ``probabilities`` [B, 1];
- ``tumor_detector_dense``: ``regions`` UINT8 [N, H, W, 3] + ``cell_mask`` BOOL [N, k, k] ->
  ``probability_grid`` FP32 [N, k, k] (see :mod:`wsi_tumor.models.dense`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsi_tumor import contract
from wsi_tumor.errors import ExportError
from wsi_tumor.models.resnet_fcn import TumorResNetFCN

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
    """Export the patch classifier: ``patches`` [B, 3, 224, 224] -> ``probabilities`` [B, 1].

    Returns:
        "dynamo" or "torchscript": the exporter that produced the file.

    Raises:
        ExportError: when both exporters fail or the checker rejects the graph.
    """
    batch = torch.export.Dim("batch", min=1, max=4096)
    return _export(
        ProbabilityHead(model).eval(),
        (example_input(),),
        path,
        {contract.PATCHES_TENSOR: {0: batch}},
        {contract.PATCHES_TENSOR: {0: "batch"}, contract.PROBABILITIES_TENSOR: {0: "batch"}},
        [contract.PATCHES_TENSOR],
        [contract.PROBABILITIES_TENSOR],
    )


def example_regions(batch: int = 2, cells: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 regions [N, H, W, 3] of k = ``cells`` and an all-true cell mask."""
    side = contract.region_size(cells)
    regions = torch.randint(0, 256, (batch, side, side, contract.CHANNELS), dtype=torch.uint8)
    return regions, torch.ones((batch, cells, cells), dtype=torch.bool)


def export_dense_onnx(model: TumorResNetFCN, path: Path) -> str:
    """Export the dense model: ``regions`` UINT8 [N, H, W, 3] + ``cell_mask`` BOOL [N, k, k]
    -> ``probability_grid`` FP32 [N, k, k], normalisation inside the graph.

    The region side is declared as ``64 k + 160`` (= 224 + (k - 1) * 64), so N and k are the
    graph's only free sizes; k spans ``contract.DENSE_MIN_CELLS..DENSE_MAX_CELLS``.

    Returns:
        "dynamo" or "torchscript": the exporter that produced the file.

    Raises:
        ExportError: when both exporters fail or the checker rejects the graph.
    """
    from wsi_tumor.models.dense import DenseTumorNet

    batch = torch.export.Dim("batch", min=1, max=4096)
    cells = torch.export.Dim("cells", min=contract.DENSE_MIN_CELLS, max=contract.DENSE_MAX_CELLS)
    side = contract.PATCH_STRIDE * cells + (contract.PATCH_SIZE - contract.PATCH_STRIDE)
    regions, mask = contract.REGIONS_TENSOR, contract.CELL_MASK_TENSOR
    return _export(
        DenseTumorNet(model).eval(),
        example_regions(),
        path,
        {regions: {0: batch, 1: side, 2: side}, mask: {0: batch, 1: cells, 2: cells}},
        {
            regions: {0: "batch", 1: "side", 2: "side"},
            mask: {0: "batch", 1: "cells", 2: "cells"},
            contract.GRID_TENSOR: {0: "batch", 1: "cells", 2: "cells"},
        },
        [regions, mask],
        [contract.GRID_TENSOR],
    )


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    dynamic_shapes: dict[str, Any],
    dynamic_axes: dict[str, dict[int, str]],
    input_names: list[str],
    output_names: list[str],
) -> str:
    """Write ``path`` with the dynamo exporter (TorchScript as the fallback) and check it.

    Tries the dynamo exporter first (torch's default path, needs onnxscript) and falls back
    to the TorchScript exporter when it fails, logging why.
    """
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    exporter = "dynamo"
    try:
        with torch.no_grad(), warnings.catch_warnings(), _quiet_loggers():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                opset_version=OPSET,
                external_data=False,
                dynamic_shapes=dynamic_shapes,
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
                    module,
                    args,
                    str(path),
                    dynamo=False,
                    opset_version=OPSET,
                    dynamic_axes=dynamic_axes,
                    input_names=input_names,
                    output_names=output_names,
                )
        except Exception as exc2:
            raise ExportError(f"{path}: ONNX export failed with both exporters: {exc2}") from exc2
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"{path}: onnx.checker rejects the exported graph: {exc}") from exc
    _check_signature(path, input_names, output_names)
    log.info("exported %s with the %s exporter", path, exporter)
    return exporter


def _check_signature(path: Path, input_names: list[str], output_names: list[str]) -> None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    if inputs != input_names or outputs != output_names:
        raise ExportError(f"{path}: graph has inputs {inputs} and outputs {outputs}")
    for tensor in graph.input:
        dim0 = tensor.type.tensor_type.shape.dim[0]
        if dim0.HasField("dim_value"):
            raise ExportError(f"{path}: batch axis of {tensor.name} is fixed at {dim0.dim_value}")
