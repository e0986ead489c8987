"""The precision of an exported graph, and the check that a repository states it truly.

An INT8 export is a QDQ graph (``QuantizeLinear`` / ``DequantizeLinear`` pairs around the
quantised operators, see :mod:`wsi_tumor.export.quantize`); an FP32 export has none. The
repository records the precision as the ``precision`` parameter of each network's config
(and of the ensemble), which the client reads; a Python-backend model compares it with its
graph when it loads, so a repository whose parameter and weights disagree never serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from wsi_tumor import contract
from wsi_tumor.errors import ExportError

QDQ_OPS: Final = frozenset({"QuantizeLinear", "DequantizeLinear"})
"""Operators whose presence makes an ONNX graph an INT8 (QDQ) graph."""


def graph_precision(onnx_path: Path) -> str:
    """``"int8"`` when the graph at ``onnx_path`` holds Q/DQ operators, else ``"fp32"``.

    Raises:
        ExportError: when the file is missing or not an ONNX model.
    """
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as exc:
        raise ExportError(f"{onnx_path}: cannot read the ONNX graph: {exc}") from exc
    return "int8" if any(node.op_type in QDQ_OPS for node in graph.node) else "fp32"


def parse_precision(value: str, where: str) -> str:
    """``value`` when it is one of :data:`contract.PRECISIONS` (an absent one is fp32).

    Raises:
        ExportError: naming ``where`` and the accepted values.
    """
    value = value.strip() or "fp32"
    if value not in contract.PRECISIONS:
        raise ExportError(
            f"{where}: parameter {contract.PRECISION_PARAMETER} = {value!r} is not one of "
            f"{', '.join(contract.PRECISIONS)}"
        )
    return value


def check_graph_precision(onnx_path: Path, stated: str) -> str:
    """Return the graph's precision when it is ``stated`` (the repository's parameter).

    Raises:
        ExportError: in one line naming the file, both precisions and the fix.
    """
    stated = parse_precision(stated, str(onnx_path))
    actual = graph_precision(onnx_path)
    if actual != stated:
        raise ExportError(
            f"{onnx_path}: the repository states {contract.PRECISION_PARAMETER} {stated} but "
            f"the graph is {actual} ({'has' if actual == 'int8' else 'no'} QuantizeLinear/"
            "DequantizeLinear nodes): export the repository again with wsi-export"
        )
    return actual
