"""Rendered configs agree with the contract and the committed files; server metadata too."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_tumor import contract
from wsi_tumor.serving.limits import DENSE_MAX_REGIONS, MAX_PATCHES_PER_REQUEST
from wsi_tumor.serving.repository import (
    COMMITTED_RUNTIME,
    RUNTIMES,
    render_repository,
    resolve_runtime,
    write_repository,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED = REPO_ROOT / "model_repository"
PATCH_DIMS = [contract.CHANNELS, contract.PATCH_SIZE, contract.PATCH_SIZE]


def _pb():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _parse(text: str):
    from google.protobuf import text_format

    return text_format.Parse(text, _pb().ModelConfig())


def test_committed_files_equal_the_renderer() -> None:
    rendered = render_repository(COMMITTED_RUNTIME)
    for relative, text in rendered.items():
        path = COMMITTED / relative
        assert path.is_file(), f"{path} missing: run write_repository(Path('model_repository'))"
        assert path.read_text() == text, f"{path} differs from the renderer's output"
    committed = {
        p.relative_to(COMMITTED).as_posix()
        for p in COMMITTED.rglob("*")
        if p.is_file() and p.suffix not in (".onnx", ".plan") and "__pycache__" not in p.parts
    }
    assert committed - set(rendered) == {"README.md"}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_configs_agree_with_the_contract(runtime) -> None:
    files = render_repository(runtime)
    configs = {p.split("/")[0]: _parse(t) for p, t in files.items() if p.endswith("config.pbtxt")}
    classifier = configs[contract.CLASSIFIER_MODEL]
    assert classifier.max_batch_size == MAX_PATCHES_PER_REQUEST
    assert [(i.name, list(i.dims)) for i in classifier.input] == [
        (contract.PATCHES_TENSOR, PATCH_DIMS)
    ]
    assert [(o.name, list(o.dims)) for o in classifier.output] == [
        (contract.PROBABILITIES_TENSOR, [1])
    ]
    assert classifier.HasField("dynamic_batching") and len(classifier.model_warmup) == 1
    assert max(classifier.dynamic_batching.preferred_batch_size) <= classifier.max_batch_size
    backend = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}.get(runtime, "python")
    assert classifier.backend == backend
    tiler = configs[contract.TILER_MODEL]
    assert tiler.max_batch_size == 0
    assert [i.name for i in tiler.input] == [contract.REGIONS_TENSOR, contract.CELL_MASK_TENSOR]
    assert list(tiler.output[0].dims) == [-1, *PATCH_DIMS]
    assert tiler.parameters["max_patches"].string_value == str(classifier.max_batch_size)
    ensemble = configs[contract.ENSEMBLE_MODEL]
    assert ensemble.platform == "ensemble"
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        contract.TILER_MODEL,
        contract.CLASSIFIER_MODEL,
        contract.ASSEMBLER_MODEL,
    ]
    assert [o.name for o in ensemble.output] == [contract.GRID_TENSOR]
    assert (
        files[f"{contract.ENSEMBLE_MODEL}/config.pbtxt"]
        == render_repository()[f"{contract.ENSEMBLE_MODEL}/config.pbtxt"]
    )  # the ensemble never changes between runtimes
    for model in (contract.CLASSIFIER_MODEL, contract.DENSE_MODEL):
        has_adapter = f"{model}/1/model.py" in files
        assert has_adapter == runtime.startswith("python-")
    dense = configs[contract.DENSE_MODEL]
    assert dense.backend == backend and dense.max_batch_size == DENSE_MAX_REGIONS
    assert [(i.name, i.data_type, list(i.dims)) for i in dense.input] == [
        (contract.REGIONS_TENSOR, _pb().TYPE_UINT8, [-1, -1, contract.CHANNELS]),
        (contract.CELL_MASK_TENSOR, _pb().TYPE_BOOL, [-1, -1]),
    ]
    assert [(o.name, list(o.dims)) for o in dense.output] == [(contract.GRID_TENSOR, [-1, -1])]
    assert dense.HasField("dynamic_batching")
    for detector in (dense, ensemble):
        mpp = detector.parameters[contract.MODEL_MPP_PARAMETER].string_value
        assert float(mpp) == contract.MODEL_MPP


def test_switching_runtime_removes_the_stale_adapter(tmp_path: Path) -> None:
    write_repository(tmp_path, "python-onnxruntime")
    adapters = [
        tmp_path / m / "1" / "model.py" for m in (contract.CLASSIFIER_MODEL, contract.DENSE_MODEL)
    ]
    assert all(adapter.is_file() for adapter in adapters)
    write_repository(tmp_path, "onnxruntime")
    assert not any(adapter.exists() for adapter in adapters)


def test_auto_runtime_follows_the_backend_directory(tmp_path: Path, monkeypatch) -> None:
    assert resolve_runtime("auto", "tensorrt") == "tensorrt"
    monkeypatch.setenv("TRITON_BACKEND_DIRECTORY", str(tmp_path))
    (tmp_path / "python").mkdir()
    assert resolve_runtime("auto", "onnx") == "python-onnxruntime"
    (tmp_path / "onnxruntime").mkdir()
    assert resolve_runtime("auto", "onnx") == "onnxruntime"


def test_auto_runtime_here_is_python_onnxruntime(monkeypatch) -> None:
    monkeypatch.delenv("TRITON_BACKEND_DIRECTORY", raising=False)
    assert resolve_runtime("auto", "onnx") == "python-onnxruntime"


@pytest.mark.triton
def test_server_metadata_shows_the_contract(triton_server_factory, exported_repository) -> None:
    import tritonclient.grpc as grpcclient

    server = triton_server_factory(exported_repository.repository)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    classifier = client.get_model_metadata(contract.CLASSIFIER_MODEL)
    assert [(t.name, t.datatype, list(t.shape)) for t in classifier.inputs] == [
        (contract.PATCHES_TENSOR, "FP32", [-1, *PATCH_DIMS])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in classifier.outputs] == [
        (contract.PROBABILITIES_TENSOR, "FP32", [-1, 1])
    ]
    ensemble = client.get_model_metadata(contract.ENSEMBLE_MODEL)
    assert [(t.name, t.datatype, list(t.shape)) for t in ensemble.inputs] == [
        (contract.REGIONS_TENSOR, "UINT8", [-1, -1, -1, contract.CHANNELS]),
        (contract.CELL_MASK_TENSOR, "BOOL", [-1, -1, -1]),
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in ensemble.outputs] == [
        (contract.GRID_TENSOR, "FP32", [-1, -1, -1])
    ]
    config = client.get_model_config(contract.CLASSIFIER_MODEL).config
    assert config.max_batch_size == MAX_PATCHES_PER_REQUEST
