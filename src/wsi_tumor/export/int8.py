"""``wsi-export --precision int8``: quantise both exported networks and check them.

For each network (``tumor_classifier``, ``tumor_detector_dense``) in the staging folder:
one calibration on the tissue of the training slides (:mod:`wsi_tumor.export.calibration`),
the CPU QDQ graph that becomes ``model.onnx``, for a TensorRT export also the symmetric QDQ
graph its plan is built from (same ranges), and the INT8 outputs compared with the FP32
graph's on the parity inputs (max |difference| within the tolerance). What was done is
written beside the model as ``quantization.json`` (settings, calibration manifest,
agreement) and ``calibration_ranges.json`` (the activation ranges, ONNX Runtime's format).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.errors import ExportError
from wsi_tumor.export.calibration import CalibrationSet
from wsi_tumor.export.quantize import Feed, QuantSettings, agreement_stats, quantize_graph

log = logging.getLogger(__name__)

INT8_FILE: Final = "model.int8.onnx"
"""Staged CPU QDQ graph (moved over model.onnx once checked)."""
TENSORRT_QDQ_FILE: Final = "model.qdq-tensorrt.onnx"
"""Staged symmetric QDQ graph a TensorRT INT8 plan is built from (not kept)."""
RANGES_FILE: Final = "calibration_ranges.json"
RECORD_FILE: Final = "quantization.json"
INT8_TOLERANCE: Final = 0.1
"""Max |probability difference| of an INT8 graph against its FP32 graph on the parity inputs
(the measured agreement is recorded; the maps' agreement is what ``make bench`` checks)."""
CALIBRATION_BATCH: Final = 16


@dataclass(frozen=True)
class ParityInputs:
    """The inputs the FP32 export was checked on, reused to check the INT8 graphs.

    Attributes:
        patches: Normalised classifier inputs [B, 3, 224, 224].
        regions: (uint8 regions, cell mask) pairs for the dense model.
    """

    patches: npt.NDArray[np.float32]
    regions: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]]


def classifier_feeds(calibration: CalibrationSet) -> list[Feed]:
    """Normalised patch batches of the calibration set (as the tiler sends them)."""
    from wsi_tumor.export.parity import to_network_input

    inputs = to_network_input(calibration.patches)
    return [
        {contract.PATCHES_TENSOR: inputs[start : start + CALIBRATION_BATCH]}
        for start in range(0, len(inputs), CALIBRATION_BATCH)
    ]


def dense_feeds(calibration: CalibrationSet) -> list[Feed]:
    """One uint8 region with its tissue mask per feed (as the client sends them)."""
    return [
        {contract.REGIONS_TENSOR: region[None], contract.CELL_MASK_TENSOR: mask[None]}
        for region, mask in zip(calibration.regions, calibration.masks, strict=True)
    ]


def quantise_networks(
    staged: Path,
    calibration: CalibrationSet,
    settings: QuantSettings,
    parity_inputs: ParityInputs,
    *,
    tensorrt: bool = False,
    tolerance: float = INT8_TOLERANCE,
) -> dict[str, dict[str, Any]]:
    """Quantise both networks under ``staged`` (``<model>/model.onnx`` in FP32).

    Leaves ``<model>/model.int8.onnx`` (and, with ``tensorrt``, the symmetric graph) beside
    the FP32 graph; :func:`install_int8` moves it over ``model.onnx`` once every other
    check (TensorRT plans) has used the FP32 graph.

    Returns:
        Per model: the record written to ``quantization.json``.

    Raises:
        ExportError: when quantisation fails or an INT8 graph differs from the FP32 one by
            more than ``tolerance``.
    """
    from wsi_tumor.export import parity
    from wsi_tumor.serving.repository import ONNX_FILE

    records: dict[str, dict[str, Any]] = {}
    for model, feeds in (
        (contract.CLASSIFIER_MODEL, classifier_feeds(calibration)),
        (contract.DENSE_MODEL, dense_feeds(calibration)),
    ):
        folder = staged / model
        float_path, int8_path = folder / ONNX_FILE, folder / INT8_FILE
        ranges = folder / RANGES_FILE
        nodes = quantize_graph(float_path, int8_path, feeds, settings, ranges, "cpu")
        if tensorrt:
            quantize_graph(float_path, folder / TENSORRT_QDQ_FILE, [], settings, ranges, "tensorrt")
        if model == contract.CLASSIFIER_MODEL:
            pairs = [
                (
                    parity.onnx_probabilities(float_path, parity_inputs.patches),
                    parity.onnx_probabilities(int8_path, parity_inputs.patches),
                )
            ]
        else:
            pairs = [
                (
                    parity.onnx_dense(float_path, pixels, mask),
                    parity.onnx_dense(int8_path, pixels, mask),
                )
                for pixels, mask in parity_inputs.regions
            ]
        reference = np.concatenate([a.ravel() for a, _ in pairs])
        candidate = np.concatenate([b.ravel() for _, b in pairs])
        agreement = agreement_stats(reference, candidate)
        parity.check_parity(reference, candidate, tolerance, f"INT8 vs FP32 ONNX Runtime ({model})")
        records[model] = {
            "precision": "int8",
            "quantised_nodes": nodes,
            "settings": settings.to_json("cpu"),
            "tensorrt_graph": settings.to_json("tensorrt") if tensorrt else None,
            "calibration": calibration.manifest(),
            "parity_vs_fp32": {**agreement, "outputs": int(reference.size)},
        }
        log.info(
            "%s INT8 vs FP32 on %d outputs: max |diff| %.3g, Pearson %.4f",
            model,
            reference.size,
            agreement["max_abs_diff"],
            agreement["pearson"],
        )
    return records


def install_int8(staged: Path, records: dict[str, dict[str, Any]]) -> None:
    """Make each staged INT8 graph ``model.onnx``, drop the TensorRT graph, write the record."""
    from wsi_tumor.serving.repository import ONNX_FILE

    for model, record in records.items():
        folder = staged / model
        os.replace(folder / INT8_FILE, folder / ONNX_FILE)
        (folder / TENSORRT_QDQ_FILE).unlink(missing_ok=True)
        (folder / RANGES_FILE).chmod(0o644)  # ONNX Runtime writes its cache owner-only
        (folder / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_record(version_dir: Path) -> dict[str, Any] | None:
    """The ``quantization.json`` of a repository's model version folder, if any.

    Raises:
        ExportError: when the file exists but is not JSON.
    """
    path = version_dir / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ExportError(f"{path}: not JSON: {exc}") from exc
    return record
