"""The part the ``python-torch`` adapters add to the ONNX Runtime ones: the session is a
:class:`wsi_tumor.serving.torch_runtime.TorchSession` over the exported ``model.pt`` (torch is
imported there, at model load, never here)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from wsi_tumor.serving.onnx_session import Session
from wsi_tumor.serving.repository import (
    DEFAULT_GPU_PRECISION,
    GPU_PRECISION_PARAMETER,
    TORCH_WEIGHTS_PARAMETER,
)
from wsi_tumor.serving.torch_runtime import Network, TorchSession


class TorchModel:
    """Mixin placed before an ONNX Runtime adapter: opens ``network`` with torch instead."""

    network: ClassVar[Network]

    def open_session(
        self, version_dir: Path, parameters: dict[str, str], kind: str, device_id: int
    ) -> Session:
        """The weights named by ``weights_file``, on the instance's device."""
        return TorchSession.open(
            version_dir / parameters[TORCH_WEIGHTS_PARAMETER],
            self.network,
            kind,
            device_id,
            parameters.get(GPU_PRECISION_PARAMETER) or DEFAULT_GPU_PRECISION,
        )
