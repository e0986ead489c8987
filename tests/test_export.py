"""Checkpoint loading, ONNX export and parity, TensorRT's clear failure without a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_tumor import contract
from wsi_tumor.errors import CheckpointError, ExportError
from wsi_tumor.export import parity
from wsi_tumor.export.cli import main
from wsi_tumor.models.checkpoint import load_model, load_state_dict


@pytest.fixture(scope="module")
def seeded_state() -> dict[str, torch.Tensor]:
    from wsi_tumor.models import build_model

    torch.manual_seed(3)
    return build_model().state_dict()


@pytest.mark.parametrize("layout", ["training", "state_dict", "monai_bare"])
def test_load_model_accepts_our_and_monai_layouts(tmp_path: Path, seeded_state, layout) -> None:
    payload = {
        "training": {"model": seeded_state, "optimizer": {}, "epoch": 3, "config": {"lr": 1}},
        "state_dict": {"state_dict": seeded_state},
        "monai_bare": seeded_state,
    }[layout]
    path = tmp_path / "ckpt.pt"
    torch.save(payload, path)
    assert set(load_state_dict(path)) == set(seeded_state)
    model = load_model(path)
    assert not model.training
    torch.testing.assert_close(model.fc.weight, seeded_state["fc.weight"])


def test_foreign_architecture_names_file_and_keys(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    path = tmp_path / "torchvision_resnet18.pt"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"torchvision_resnet18\.pt.*missing keys.*features"):
        load_model(path)


def test_missing_and_garbage_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt"):
        load_state_dict(garbage)


def test_exported_onnx_has_contract_signature_and_dynamic_batch(exported_repository) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported_repository.onnx_path))
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == (contract.PATCHES_TENSOR, contract.PROBABILITIES_TENSOR)
    assert inp.shape[1:] == [contract.CHANNELS, contract.PATCH_SIZE, contract.PATCH_SIZE]
    assert not isinstance(inp.shape[0], int)
    model = load_model(exported_repository.checkpoint)
    patches = parity.sample_patches(None, count=5, seed=9)
    inputs = parity.to_network_input(patches)
    for batch in (1, 5):
        (probs,) = session.run(None, {contract.PATCHES_TENSOR: inputs[:batch]})
        assert probs.shape == (batch, 1)
        np.testing.assert_allclose(
            probs, parity.torch_probabilities(model, inputs[:batch]), atol=parity.FP32_TOLERANCE
        )
    assert exported_repository.onnx_max_diff <= parity.FP32_TOLERANCE


def test_parity_patches_come_from_the_real_image() -> None:
    patches = parity.sample_patches(None, count=4)
    assert patches.shape == (4, contract.PATCH_SIZE, contract.PATCH_SIZE, 3)
    assert patches.dtype == np.uint8 and patches.std() > 10  # real texture, not blank


def test_check_parity_raises_above_tolerance() -> None:
    a = np.zeros((3, 1), np.float32)
    assert parity.check_parity(a, a + 5e-5, 1e-4, "x") == pytest.approx(5e-5)
    with pytest.raises(ExportError, match="exceeds the tolerance"):
        parity.check_parity(a, a + 1e-3, 1e-4, "x")


def test_tensorrt_without_package_or_gpu_is_a_clear_error(tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the TensorRT path can run here")
    rc = main(
        [
            "--checkpoint",
            str(tmp_path / "x.pt"),
            "--repository",
            str(tmp_path),
            "--format",
            "tensorrt",
            "--precision",
            "fp16",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "pip install wsi-tumor[gpu]" in err or "needs a CUDA GPU" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--precision", "fp16"], "needs --format tensorrt"),
        (["--runtime", "tensorrt"], "needs --format tensorrt"),
        (["--tolerance", "0"], "--tolerance must be > 0"),
    ],
)
def test_cli_rejects_bad_flags(tmp_path: Path, capsys, argv, message) -> None:
    rc = main(["--checkpoint", str(tmp_path / "x.pt"), "--repository", str(tmp_path), *argv])
    assert rc == 2 and message in capsys.readouterr().err  # ConfigError: a usage error


def test_cli_reports_a_foreign_checkpoint(tmp_path: Path, capsys) -> None:
    path = tmp_path / "other.pt"
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, path)
    rc = main(
        [
            "--checkpoint",
            str(path),
            "--repository",
            str(tmp_path / "repo"),
            "--runtime",
            "python-onnxruntime",
            "--quiet",
        ]
    )
    assert rc == 1 and "other.pt: not a TumorResNetFCN checkpoint" in capsys.readouterr().err


def test_failed_parity_leaves_no_model_in_the_repository(
    tmp_path: Path, seeded_state, capsys
) -> None:
    """Weights are checked in a staging folder: a parity failure writes nothing servable."""
    checkpoint = tmp_path / "ckpt.pt"
    torch.save({"model": seeded_state}, checkpoint)
    repository = tmp_path / "repo"
    argv = ["--checkpoint", str(checkpoint), "--repository", str(repository), "--quiet",
            "--runtime", "python-onnxruntime", "--parity-patches", "4"]  # fmt: skip
    # ONNX Runtime differs from PyTorch by ~1e-7 here: a 1e-12 tolerance must fail
    assert main([*argv, "--tolerance", "1e-12"]) == 1
    assert "exceeds the tolerance" in capsys.readouterr().err
    assert not list(repository.rglob("model.onnx"))
    assert not any(p.name.startswith(".wsi-export-") for p in tmp_path.iterdir())
    assert main(argv) == 0
    weights = repository / contract.CLASSIFIER_MODEL / "1" / "model.onnx"
    assert weights.is_file() and weights.stat().st_size > 1_000_000
    assert not any(p.name.startswith(".wsi-export-") for p in tmp_path.iterdir())
