"""INT8 (issue 29): QDQ export, calibration, the precision parameter, the real server.

The INT8 repository is exported with ``wsi-export --precision int8`` from the same seeded
checkpoint as ``exported_repository`` (FP32), calibrated on the real H&E sample image, so
the two can be compared request by request on one real tritonserver each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from wsi_tumor import contract
from wsi_tumor.data.samples import REAL_HE
from wsi_tumor.errors import ExportError, ServerError
from wsi_tumor.export import parity
from wsi_tumor.export.calibration import (
    CalibrationConfig,
    calibration_slides,
    read_calibration_set,
)
from wsi_tumor.export.cli import main as export_main
from wsi_tumor.export.int8 import RANGES_FILE, RECORD_FILE, classifier_feeds
from wsi_tumor.export.quantize import QuantSettings, ort_kernels, quantize_graph
from wsi_tumor.export.tensorrt_build import builder_flags
from wsi_tumor.serving.local_server import LocalTritonServer
from wsi_tumor.serving.precision import check_graph_precision, graph_precision
from wsi_tumor.serving.repository import write_repository

INT8_TOLERANCE = 0.05
"""Max |probability difference| INT8 vs FP32 the served models must keep (seeded weights;
the export measured about 0.003)."""
NETWORKS = (contract.CLASSIFIER_MODEL, contract.DENSE_MODEL)


def _onnx(repository: Path, model: str) -> Path:
    return repository / model / "1" / "model.onnx"


def _float_ops_before_quantize(graph: onnx.GraphProto) -> list[str]:
    """Op types on the path from the first graph input to its first QuantizeLinear."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    ops, tensor = [], graph.input[0].name
    while True:
        (node,) = consumers[tensor]
        if node.op_type == "QuantizeLinear":
            return ops
        ops.append(node.op_type)
        tensor = node.output[0]


@pytest.fixture(scope="module")
def int8_repository(tmp_path_factory: pytest.TempPathFactory, exported_repository) -> Path:
    """``wsi-export --precision int8`` of the seeded checkpoint, calibrated on REAL_HE
    (min-max: the quickest method; the default's histograms take longer)."""
    repository = tmp_path_factory.mktemp("int8") / "model_repository"
    argv = ["--checkpoint", str(exported_repository.checkpoint), "--repository",
            str(repository), "--runtime", "python-onnxruntime", "--precision", "int8",
            "--calibration", str(REAL_HE), "--calibration-patches", "32",
            "--calibration-regions", "4", "--calibration-method", "minmax",
            "--parity-patches", "8", "--quiet"]  # fmt: skip
    assert export_main(argv) == 0
    return repository


def test_int8_export_writes_fused_qdq_graphs_with_float_ends(int8_repository: Path) -> None:
    for model in NETWORKS:
        path = _onnx(int8_repository, model)
        assert graph_precision(path) == "int8"
        graph = onnx.load(str(path)).graph
        # from the image input to the first QuantizeLinear: the float normalisation only
        assert _float_ops_before_quantize(graph) == (
            [] if model == contract.CLASSIFIER_MODEL else ["Transpose", "Cast", "Div", "Mul", "Add"]
        )
        producers = {out: n for n in graph.node for out in n.output}
        tail = producers[graph.output[0].name]
        assert tail.op_type in ("Reshape", "Mul")  # the float tail: sigmoid (and the mask)
        kernels = ort_kernels(path)
        # every backbone conv runs as ONNX Runtime's fused INT8 kernel; the head stays float
        assert kernels["QLinearConv"] == 20 and kernels["Conv"] == 1
        assert kernels["QLinearAdd"] == 8 and "DequantizeLinear" in kernels
        record = json.loads((path.parent / RECORD_FILE).read_text())
        assert record["settings"]["format"] == "QDQ" and record["settings"]["per_channel"]
        assert record["calibration"]["patches"] == 32 and record["calibration"]["regions"] == 4
        assert record["calibration"]["slides"][0]["name"] == REAL_HE.stem
        assert record["parity_vs_fp32"]["max_abs_diff"] < INT8_TOLERANCE
        assert (path.parent / RANGES_FILE).is_file()
    for model in (*NETWORKS, contract.ENSEMBLE_MODEL):
        config = (int8_repository / model / "config.pbtxt").read_text()
        assert 'key: "precision"\n  value {\n    string_value: "int8"' in config


def test_int8_server_answers_within_tolerance_of_fp32(
    triton_server_factory, exported_repository, int8_repository: Path
) -> None:
    import tritonclient.grpc as grpcclient

    fp32 = triton_server_factory(exported_repository.repository)
    int8 = triton_server_factory(int8_repository)
    patches = parity.to_network_input(parity.sample_patches(None, 12, seed=4))
    side = contract.region_size(contract.REGION_CELLS)
    regions = parity.sample_patches(None, 2, seed=5, size=side)
    mask = np.random.default_rng(6).random((2, contract.REGION_CELLS, contract.REGION_CELLS)) < 0.5

    def ask(server: LocalTritonServer, model: str, feeds: dict, output: str) -> np.ndarray:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        inputs = []
        for name, array in feeds.items():
            dtype = {np.float32: "FP32", np.uint8: "UINT8", np.bool_: "BOOL"}[array.dtype.type]
            tensor = grpcclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        answer = client.infer(model, inputs).as_numpy(output)
        client.close()
        return np.asarray(answer)

    detector = {contract.REGIONS_TENSOR: regions, contract.CELL_MASK_TENSOR: mask}
    for model, feeds, output in (
        (
            contract.CLASSIFIER_MODEL,
            {contract.PATCHES_TENSOR: patches},
            contract.PROBABILITIES_TENSOR,
        ),
        (contract.ENSEMBLE_MODEL, detector, contract.GRID_TENSOR),
        (contract.DENSE_MODEL, detector, contract.GRID_TENSOR),
    ):
        reference, quantised = ask(fp32, model, feeds, output), ask(int8, model, feeds, output)
        assert quantised.shape == reference.shape and quantised.size > 0
        np.testing.assert_allclose(quantised, reference, atol=INT8_TOLERANCE)
        assert not np.array_equal(quantised, reference)  # it is another graph
        if output == contract.GRID_TENSOR:
            assert np.all(quantised[~mask] == 0)  # the float mask still zeroes off cells


def test_wsi_infer_records_the_repository_precision(
    triton_server_factory, exported_repository, int8_repository: Path, tmp_path: Path
) -> None:
    from wsi_tumor.client.outputs import output_stem
    from wsi_tumor.infer import main as infer_main

    maps = {}
    for name, repository in (("fp32", exported_repository.repository), ("int8", int8_repository)):
        server = triton_server_factory(repository)
        out = tmp_path / name
        argv = [str(REAL_HE), "--out", str(out), "--url", server.grpc_url, "--mode", "dense",
                "--quiet"]  # fmt: skip
        assert infer_main(argv) == 0
        report = json.loads((out / f"{output_stem(REAL_HE)}.json").read_text())
        assert report["model"]["precision"] == name
        maps[name] = np.load(out / f"{output_stem(REAL_HE)}.npy")
    tissue = maps["fp32"] != 0
    assert tissue.sum() > 100
    np.testing.assert_allclose(maps["int8"][tissue], maps["fp32"][tissue], atol=INT8_TOLERANCE)


def test_a_precision_parameter_that_lies_stops_the_server_at_start_up(
    tmp_path: Path, exported_repository
) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(exported_repository.repository, repository)
    write_repository(repository, "python-onnxruntime", "int8")  # FP32 graphs stay
    with pytest.raises(ServerError) as failure:
        LocalTritonServer(repository, ready_timeout_s=60).start()
    lines = [line for line in str(failure.value).splitlines() if "states precision" in line]
    assert lines, str(failure.value)
    assert "states precision int8 but the graph is fp32" in lines[0]
    assert (
        str(_onnx(repository, contract.CLASSIFIER_MODEL)) in lines[0]
        or str(_onnx(repository, contract.DENSE_MODEL)) in lines[0]
    )


def test_graph_precision_check_names_file_and_both_precisions(
    exported_repository, int8_repository: Path
) -> None:
    fp32_graph = exported_repository.onnx_path
    assert check_graph_precision(fp32_graph, "") == "fp32"  # no parameter: fp32
    assert check_graph_precision(_onnx(int8_repository, contract.DENSE_MODEL), "int8") == "int8"
    with pytest.raises(ExportError, match="states precision int8 but the graph is fp32") as err:
        check_graph_precision(fp32_graph, "int8")
    assert str(fp32_graph) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ExportError, match="'int4' is not one of fp32, fp16, int8"):
        check_graph_precision(fp32_graph, "int4")


def test_calibration_on_an_empty_or_tissueless_set_stops_clearly(tmp_path: Path, capsys) -> None:
    from wsi_tumor.data.tiff_writer import PyramidSpec, write_pyramid

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match="no slide to calibrate on"):
        calibration_slides(empty)
    glass = tmp_path / "glass"
    glass.mkdir()
    white = np.random.default_rng(0).normal(238, 2, (768, 768, 3)).clip(0, 255).astype(np.uint8)
    spec = PyramidSpec(768, 768, 3, contract.DEFAULT_MPP, min_size=64)
    write_pyramid(glass / "blank.tif", spec, lambda row0, rows: white[row0 : row0 + rows])
    with pytest.raises(ExportError, match=r"no tissue cell in its 1 slide\(s\)"):
        read_calibration_set(CalibrationConfig(glass, patches=4, regions=1))
    # the command line: exit 1, one line naming the source
    argv = ["--checkpoint", str(tmp_path / "x.pt"), "--repository", str(tmp_path / "r"),
            "--precision", "int8", "--quiet"]  # fmt: skip
    assert export_main(argv) == 2
    assert "--precision int8 needs --calibration" in capsys.readouterr().err


def test_calibration_set_is_drawn_from_tissue_as_the_client_reads_it() -> None:
    calibration = read_calibration_set(CalibrationConfig(REAL_HE, patches=6, regions=2, seed=3))
    assert calibration.patches.shape == (6, contract.PATCH_SIZE, contract.PATCH_SIZE, 3)
    side = contract.region_size(8)
    assert calibration.regions.shape == (2, side, side, 3) and calibration.masks.shape == (2, 8, 8)
    assert calibration.masks.any(axis=(1, 2)).all()
    again = read_calibration_set(CalibrationConfig(REAL_HE, patches=6, regions=2, seed=3))
    np.testing.assert_array_equal(again.patches, calibration.patches)  # seeded
    manifest = calibration.manifest()
    assert manifest["slides"][0]["tissue_cells"] == 324 and manifest["patches"] == 6


def test_one_calibration_gives_a_tensorrt_qdq_graph_the_builder_takes(
    tmp_path: Path, exported_repository
) -> None:
    """The symmetric graph for TensorRT reuses the CPU graph's ranges: zero points 0, INT8
    types, no INT32 bias; the builder is set for explicit quantisation (INT8 + FP16 flags, no
    calibrator), and refuses a float graph for INT8."""
    fp32_graph = exported_repository.onnx_path
    feeds = classifier_feeds(read_calibration_set(CalibrationConfig(REAL_HE, 8, 1)))
    ranges, settings = tmp_path / RANGES_FILE, QuantSettings(method="minmax")
    cpu, trt = tmp_path / "cpu.onnx", tmp_path / "trt.onnx"
    quantize_graph(fp32_graph, cpu, feeds, settings, ranges, "cpu")
    quantize_graph(fp32_graph, trt, [], settings, ranges, "tensorrt")  # ranges from the cache
    graph, cpu_graph = onnx.load(str(trt)).graph, onnx.load(str(cpu)).graph
    values = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    zero_points = [values[n.input[2]] for n in qdq]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    dequantised = [values[n.input[0]] for n in qdq if n.input[0] in values]
    assert dequantised and all(w.dtype == np.int8 for w in dequantised)  # no INT32 bias
    # the input's scales come from the same cached range: symmetric int8 / asymmetric uint8
    cached = json.loads(ranges.read_text())["data"][contract.PATCHES_TENSOR]
    low, high = cached["lowest"]["data"][0], cached["highest"]["data"][0]

    def input_scale(g: onnx.GraphProto, init: dict) -> float:
        node = next(n for n in g.node if n.op_type == "QuantizeLinear")
        assert node.input[0] == contract.PATCHES_TENSOR
        return float(init[node.input[1]])

    cpu_values = {t.name: onnx.numpy_helper.to_array(t) for t in cpu_graph.initializer}
    assert input_scale(graph, values) == pytest.approx(max(-low, high) / 127, rel=1e-5)
    assert input_scale(cpu_graph, cpu_values) == pytest.approx((high - low) / 255, rel=1e-5)
    inputs = parity.to_network_input(parity.sample_patches(None, 4, seed=9))
    np.testing.assert_allclose(
        parity.onnx_probabilities(trt, inputs), parity.onnx_probabilities(cpu, inputs), atol=0.02
    )
    assert builder_flags("int8", trt) == ("FP16", "INT8")
    assert builder_flags("fp16", fp32_graph) == ("FP16",)
    with pytest.raises(ExportError, match="needs a QDQ graph"):
        builder_flags("int8", fp32_graph)
    with pytest.raises(ExportError, match="cannot be built from a QDQ graph"):
        builder_flags("fp32", trt)
