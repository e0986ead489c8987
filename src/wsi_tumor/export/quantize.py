"""Static INT8 quantisation of the exported graphs with ONNX Runtime's tools (QDQ format).

One calibration (the activation ranges of the backbone's tensors, measured on tissue from
the training slides by :mod:`wsi_tumor.export.calibration`) gives two QDQ graphs of the same
network:

- ``cpu``: UINT8 activations (asymmetric), INT8 weights per output channel. ONNX Runtime's
  CPU provider fuses every Q/DQ pair of the backbone into ``QLinearConv`` / ``QLinearAdd``
  and friends (checked by :func:`ort_kernels`); this is ``model.onnx`` of an INT8 repository.
- ``tensorrt``: INT8 activations and weights, both symmetric (zero point 0), float biases:
  what TensorRT's explicit quantisation accepts. Built from the very same ranges, it becomes
  the plan of ``wsi-export --format tensorrt --precision int8``.

Only the backbone is quantised: every node from the first convolution up to the head (the
1x1 ``fc`` convolution). The normalisation before it (in the dense graph) and the head,
sigmoid and mask after it stay in float, so the first QuantizeLinear takes the normalised
image and the probabilities keep their float resolution.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from wsi_tumor.errors import ExportError

log = logging.getLogger(__name__)

Method = Literal["minmax", "entropy", "percentile"]
METHODS: Final[tuple[str, ...]] = ("minmax", "entropy", "percentile")
DEFAULT_METHOD: Final = "percentile"
"""Calibration method chosen by measurement (docs/int8.md): percentile calibration (99.999th
percentile of each tensor's absolute values) kept the INT8 maps closest to FP32."""
PERCENTILE: Final = 99.999
Target = Literal["cpu", "tensorrt"]
QUANTISED_OPS: Final = frozenset({"Conv", "Add", "Relu", "MaxPool", "AveragePool"})
"""Operators of the backbone that get Q/DQ (everything a ResNet18 body holds)."""
CALIBRATION_STRIDE: Final = 4
"""Feeds per calibration pass: histograms grow pass by pass, not all activations at once."""

Feed = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class QuantSettings:
    """How a graph is quantised.

    Attributes:
        method: Calibration method (min-max, entropy or percentile of the activations).
        per_channel: One weight scale per output channel (else one per tensor).
        reduce_range: 7-bit weights in the CPU graph (the TensorRT graph keeps 8 bits).
            Without VNNI/AMX, ONNX Runtime's x86 INT8 kernels add pairs of uint8 x int8
            products in saturating 16-bit lanes (``vpmaddubsw``): 8-bit weights overflow
            them and the maps drift; 7-bit weights cannot (2 x 255 x 63 < 32767). The
            cost on VNNI CPUs is one bit of weight resolution (docs/int8.md).
    """

    method: str = DEFAULT_METHOD
    per_channel: bool = True
    reduce_range: bool = True

    def to_json(self, target: Target) -> dict[str, Any]:
        """The settings and the types ``target`` uses, for the repository's record."""
        activations = "uint8 asymmetric" if target == "cpu" else "int8 symmetric"
        reduced = self.reduce_range and target == "cpu"
        return {
            "format": "QDQ",
            "method": self.method,
            **({"percentile": PERCENTILE} if self.method == "percentile" else {}),
            "per_channel": self.per_channel,
            "reduce_range": reduced,
            "activations": activations,
            "weights": f"int8 symmetric ({'7' if reduced else '8'}-bit range)"
            + (" per channel" if self.per_channel else ""),
        }


class FeedReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list of feeds, with the
    ``set_range`` its strided calibration uses."""

    def __init__(self, feeds: Sequence[Feed]) -> None:
        self.feeds = list(feeds)
        self.start, self.end = 0, len(self.feeds)
        self.index = 0

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve feeds ``start_index .. end_index - 1`` next."""
        self.start, self.end, self.index = start_index, end_index, start_index

    def get_next(self) -> Feed | None:
        """The next feed, or None at the end of the range."""
        if self.index >= min(self.end, len(self.feeds)):
            return None
        self.index += 1
        return self.feeds[self.index - 1]


def backbone_nodes(model: Any) -> list[str]:
    """Names of the nodes to quantise: those of :data:`QUANTISED_OPS` from the first
    convolution up to, not including, the last one (the head).

    Raises:
        ExportError: when the graph has fewer than two convolutions.
    """
    nodes = list(model.graph.node)
    convs = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
    if len(convs) < 2:
        raise ExportError(f"graph {model.graph.name!r}: expected a backbone and a head conv")
    return [n.name for n in nodes[convs[0] : convs[-1]] if n.op_type in QUANTISED_OPS]


def _input_dims(model: Any) -> list[list[str | int]]:
    return [
        [d.dim_param or d.dim_value for d in tensor.type.tensor_type.shape.dim]
        for tensor in (*model.graph.input, *model.graph.output)
    ]


def quantize_graph(
    float_path: Path,
    out_path: Path,
    feeds: Sequence[Feed],
    settings: QuantSettings,
    ranges: Path,
    target: Target = "cpu",
) -> int:
    """Write the QDQ graph of ``float_path`` for ``target`` to ``out_path``.

    The activation ranges are read from ``ranges`` when it exists (a calibration done for
    the other target), else measured on ``feeds`` and written there, so both targets of
    one network share one calibration.

    Args:
        float_path: The FP32 graph from :mod:`wsi_tumor.export.onnx_export`.
        out_path: Where the QDQ graph goes.
        feeds: Calibration inputs (name -> array), one session run each.
        settings: Method and weight options.
        ranges: ONNX Runtime's calibration cache (JSON) of this network.
        target: ``cpu`` (ONNX Runtime) or ``tensorrt`` (explicit quantisation).

    Returns:
        The number of quantised nodes.

    Raises:
        ExportError: without calibration feeds (and no cached ranges), or when ONNX Runtime's
            quantiser fails or changes the graph's signature.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if settings.method not in METHODS:
        raise ExportError(f"unknown calibration method {settings.method!r}")
    if not feeds and not ranges.is_file():
        raise ExportError(f"{float_path}: no calibration data to quantise with")
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[settings.method]
    extra: dict[str, Any] = {"CalibStridedMinMax": min(CALIBRATION_STRIDE, max(1, len(feeds)))}
    if len(feeds) % extra["CalibStridedMinMax"]:
        extra["CalibStridedMinMax"] = 1
    if settings.method == "percentile":
        extra["CalibPercentile"] = PERCENTILE
    if target == "cpu":
        activation_type = QuantType.QUInt8
    else:
        activation_type = QuantType.QInt8
        extra.update(ActivationSymmetric=True, WeightSymmetric=True, QuantizeBias=False)
    with tempfile.TemporaryDirectory(prefix="wsi-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            # Symbolic shape inference cannot follow the dense graph's "64*cells + 160"
            # sides; ONNX's own shape inference is all a CNN's quantisation needs.
            quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
            nodes = backbone_nodes(onnx.load(str(prepared)))
            quantize_static(
                str(prepared),
                str(out_path),
                FeedReader(feeds),
                quant_format=QuantFormat.QDQ,
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range and target == "cpu",
                activation_type=activation_type,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=nodes,
                calibrate_method=method,
                extra_options=extra,
                calibration_cache_path=ranges,
            )
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"{float_path}: INT8 quantisation ({target}) failed: {exc}") from exc
    _check_quantised(float_path, out_path)
    log.info(
        "quantised %s -> %s (%s, %d nodes, %s calibration)",
        float_path.name,
        out_path,
        target,
        len(nodes),
        settings.method,
    )
    return len(nodes)


def _check_quantised(float_path: Path, out_path: Path) -> None:
    import onnx

    reference, quantised = onnx.load(str(float_path)), onnx.load(str(out_path))
    try:
        onnx.checker.check_model(quantised, full_check=True)
    except Exception as exc:
        raise ExportError(f"{out_path}: onnx.checker rejects the QDQ graph: {exc}") from exc
    if _input_dims(reference) != _input_dims(quantised) or [
        t.name for t in (*reference.graph.input, *reference.graph.output)
    ] != [t.name for t in (*quantised.graph.input, *quantised.graph.output)]:
        raise ExportError(f"{out_path}: quantisation changed the graph's inputs or outputs")


def ort_kernels(onnx_path: Path) -> dict[str, int]:
    """Operators of the graph ONNX Runtime's CPU provider runs after its optimisations.

    For a QDQ graph the quantised convolutions show as ``QLinearConv`` (fused INT8 kernels);
    a ``DequantizeLinear -> Conv`` left unfused would show as ``Conv`` in float.
    """
    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="wsi-kernels-") as tmp:
        options = onnxruntime.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        options.log_severity_level = 3
        onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    return dict(sorted(Counter(node.op_type for node in graph.node).items()))


CPU_INT8_FLAGS: Final = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512bw", "avx2")
"""/proc/cpuinfo flags that decide ONNX Runtime's INT8 kernels on x86 (VNNI and AMX have
8-bit dot-product instructions; AVX2 and AVX512BW multiply through saturating 16-bit sums)."""


def cpu_int8_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, bool]:
    """Which of :data:`CPU_INT8_FLAGS` this CPU has (all False where cpuinfo is unreadable)."""
    try:
        flags = next(
            (
                set(line.split(":", 1)[1].split())
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("flags")
            ),
            set(),
        )
    except OSError:
        flags = set()
    return {flag: flag in flags for flag in CPU_INT8_FLAGS}


def has_int8_dot_product(features: dict[str, bool]) -> bool:
    """Whether the CPU has an 8-bit dot-product instruction (VNNI or AMX)."""
    return any(features.get(flag, False) for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def agreement_stats(
    reference: npt.NDArray[np.floating], candidate: npt.NDArray[np.floating]
) -> dict[str, float]:
    """Max and mean |difference| and Pearson of two outputs (the export's INT8 check)."""
    x = reference.astype(np.float64).ravel()
    y = candidate.astype(np.float64).ravel()
    pearson = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
    diff = np.abs(x - y)
    return {
        "max_abs_diff": float(diff.max(initial=0.0)),
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "pearson": pearson,
    }
