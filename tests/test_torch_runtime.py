"""The ``python-torch`` runtime (issue 30): PyTorch in Triton's Python backend.

On the CPU its instances run FP32, so through the real server both modes must give the maps
ONNX Runtime gives (the ``python-onnxruntime`` repository of the same checkpoint) within 1e-4;
the FP16 GPU session is checked against FP32 where a GPU is present.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_tumor import contract
from wsi_tumor import infer as infer_cli
from wsi_tumor.export import parity
from wsi_tumor.export.cli import main as export_main
from wsi_tumor.models import build_model
from wsi_tumor.serving.repository import TORCH_FILE
from wsi_tumor.serving.torch_runtime import TorchSession, fold_batch_norms

MAX_ABS_DIFF = 1e-4


def _model_with_batch_norm_statistics() -> torch.nn.Module:
    """A seeded network whose batch norms do something (fresh ones are near identities)."""
    torch.manual_seed(3)
    model = build_model().eval()
    generator = torch.Generator().manual_seed(4)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) * 0.4 - 0.2)
    return model


def test_folded_batch_norms_give_the_same_logits() -> None:
    model = _model_with_batch_norm_statistics()
    folded = fold_batch_norms(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # not changed
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), atol=1e-4, rtol=1e-5)


def test_cpu_sessions_equal_plain_pytorch_on_real_patches_and_regions() -> None:
    model = _model_with_batch_norm_statistics()
    cpu = torch.device("cpu")
    inputs = parity.to_network_input(parity.sample_patches(None, 6))
    (probabilities,) = TorchSession(model, "classifier", cpu).run(
        None, {contract.PATCHES_TENSOR: inputs}
    )
    assert probabilities.shape == (6, 1) and probabilities.dtype == np.float32
    expected = parity.torch_probabilities(model, inputs)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert np.ptp(expected) > 1e-3  # the patches differ, so a mix-up would show
    dense = TorchSession(model, "dense", cpu, gpu_precision="fp16")  # fp32 on the CPU
    assert dense.precision == "fp32"
    for pixels, mask in parity.sample_regions(None, 2):
        feed = {contract.REGIONS_TENSOR: pixels, contract.CELL_MASK_TENSOR: mask}
        (grid,) = dense.run(None, feed)
        np.testing.assert_allclose(grid, parity.torch_dense(model, pixels, mask), atol=1e-5)
        assert np.all(grid[~mask] == 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_a_gpu_instance_without_a_gpu_runs_on_the_cpu(tmp_path: Path) -> None:
    weights = tmp_path / TORCH_FILE
    torch.save(build_model().state_dict(), weights)
    session = TorchSession.open(weights, "dense", "GPU", 0)
    assert session.device.type == "cpu" and session.precision == "fp32"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_channels_last_on_the_gpu_is_within_1e_2_of_fp32() -> None:
    model = _model_with_batch_norm_statistics()
    gpu = TorchSession(model, "dense", torch.device("cuda"))
    assert gpu.precision == "fp16"
    for pixels, mask in parity.sample_regions(None, 2):
        feed = {contract.REGIONS_TENSOR: pixels, contract.CELL_MASK_TENSOR: mask}
        (grid,) = gpu.run(None, feed)
        np.testing.assert_allclose(grid, parity.torch_dense(model, pixels, mask), atol=1e-2)


def _export(checkpoint: Path, repository: Path, *extra: str) -> int:
    return export_main(
        ["--checkpoint", str(checkpoint), "--repository", str(repository), "--quiet",
         "--runtime", "python-torch", "--parity-patches", "8", *extra]
    )  # fmt: skip


def _config(repository: Path, model: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    text = (repository / model / "config.pbtxt").read_text()
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_export_writes_weights_adapters_and_the_instance_kind(
    tmp_path: Path, exported_repository
) -> None:
    repository = tmp_path / "repo"
    assert _export(exported_repository.checkpoint, repository, "--instance-kind", "gpu") == 0
    for model in (contract.CLASSIFIER_MODEL, contract.DENSE_MODEL):
        version = repository / model / "1"
        assert sorted(p.name for p in version.iterdir()) == ["model.pt", "model.py"]
        assert "_torch import TritonPythonModel" in (version / "model.py").read_text()
        state = torch.load(version / TORCH_FILE, weights_only=True)
        expected = torch.load(exported_repository.checkpoint, weights_only=True)["model"]
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in state)
        config = _config(repository, model)
        assert config.backend == "python"
        kinds = config.instance_group[0].DESCRIPTOR.fields_by_name["kind"].enum_type
        named = [(kinds.values_by_number[g.kind].name, g.count) for g in config.instance_group]
        assert named == [("KIND_GPU", 2)]
        assert config.parameters["gpu_precision"].string_value == "fp16"
    assert _export(exported_repository.checkpoint, repository, "--instance-kind", "cpu") == 0
    group = _config(repository, contract.DENSE_MODEL).instance_group
    assert [(kinds.values_by_number[g.kind].name, g.count) for g in group] == [("KIND_CPU", 1)]
    assert not list(repository.rglob("*.onnx"))  # no ONNX graph: torch runs the weights


# --- through the real server ----------------------------------------------------------------
@pytest.fixture(scope="module")
def torch_repository(tmp_path_factory: pytest.TempPathFactory, exported_repository) -> Path:
    """The conftest checkpoint exported with ``--runtime python-torch`` (CPU instances)."""
    repository = tmp_path_factory.mktemp("torch") / "model_repository"
    assert _export(exported_repository.checkpoint, repository, "--instance-kind", "cpu") == 0
    return repository


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_client import tissue_image, write_slide

    return write_slide(tmp_path_factory.mktemp("slide") / "small.tif", tissue_image(1024, 640, 3))


@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dense", "exact"])
def test_served_maps_equal_onnx_runtime_within_1e_4(
    triton_server_factory, exported_repository, torch_repository, slide, tmp_path: Path, mode
) -> None:
    """``wsi-infer`` through the torch server and through the ONNX Runtime server."""
    maps = {}
    for name, repository in (("onnx", exported_repository.repository), ("torch", torch_repository)):
        server = triton_server_factory(repository)
        out = tmp_path / name
        argv = [str(slide), "--out", str(out), "--url", server.grpc_url, "--mode", mode]
        assert infer_cli.main([*argv, "--quiet", "--readers", "2"]) == 0
        report = json.loads((out / "small.json").read_text())
        assert report["counts"]["patches"] > 20
        maps[name] = np.load(out / "small.npy")
    np.testing.assert_allclose(maps["torch"], maps["onnx"], rtol=0, atol=MAX_ABS_DIFF)
    tissue = maps["onnx"] > 0
    assert np.ptp(maps["onnx"][tissue]) > 1e-4, "a constant map would hide misplaced cells"
