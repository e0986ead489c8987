"""Shared pytest fixtures: a real ``tritonserver`` per model repository, started once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wsi_tumor.errors import ServerError
from wsi_tumor.serving.local_server import LocalTritonServer, find_tritonserver

StartServer = Callable[[Path], LocalTritonServer]


@pytest.fixture(scope="session")
def triton_server_factory() -> Iterator[StartServer]:
    """Start (once per repository) a real tritonserver on free ports; stop all at the end.

    Fails, rather than skips, when the binary is missing: ``make setup`` installs it and a
    silently skipped server test would hide that.
    """
    try:
        find_tritonserver()
    except ServerError as exc:
        pytest.fail(str(exc))
    servers: dict[Path, LocalTritonServer] = {}

    def start(repository: Path) -> LocalTritonServer:
        key = Path(repository).resolve()
        server = servers.get(key)
        if server is None or not server.running:
            server = LocalTritonServer(key).start()
            servers[key] = server
        return server

    try:
        yield start
    finally:
        for server in servers.values():
            server.stop()


# --- exported model repository (issue 4) ---------------------------------------------------
@dataclass(frozen=True)
class ExportedRepository:
    """A model repository exported from a seeded random-init TumorResNetFCN.

    Attributes:
        repository: The repository root (``--runtime python-onnxruntime``: runs here).
        checkpoint: The ``{"model": state_dict}`` checkpoint it was exported from; rebuild
            the same torch model with ``wsi_tumor.models.checkpoint.load_model(checkpoint)``.
        onnx_path: ``repository/tumor_classifier/1/model.onnx``.
        onnx_max_diff: Max |probability diff| ONNX Runtime vs PyTorch found by the export.
    """

    repository: Path
    checkpoint: Path
    onnx_path: Path
    onnx_max_diff: float


@pytest.fixture(scope="session")
def exported_repository(tmp_path_factory: pytest.TempPathFactory) -> ExportedRepository:
    """Export ``torch.manual_seed(0); build_model()`` with ``wsi-export`` into a tmp dir."""
    import torch

    from wsi_tumor.export.cli import ExportConfig, run_export
    from wsi_tumor.models import build_model

    root = tmp_path_factory.mktemp("exported")
    torch.manual_seed(0)
    model = build_model()
    checkpoint = root / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "epoch": 0, "config": {"seed": 0}}, checkpoint)
    result = run_export(
        ExportConfig(
            checkpoint=checkpoint,
            repository=root / "model_repository",
            runtime="python-onnxruntime",
            parity_patches=8,
        )
    )
    return ExportedRepository(
        root / "model_repository", checkpoint, result.onnx_path, result.onnx_max_diff
    )
