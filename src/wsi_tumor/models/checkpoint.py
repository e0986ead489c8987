"""Load TumorResNetFCN weights from our training checkpoints or the MONAI bundle's model.pt.

Accepted layouts: ``{"model": state_dict, ...}`` (wsi-train), ``{"state_dict": state_dict}``
and a bare state_dict with keys ``features.*`` and ``fc.*`` (MONAI's models/model.pt).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wsi_tumor.errors import CheckpointError
from wsi_tumor.models.resnet_fcn import TumorResNetFCN, build_model

log = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict")
_SHOWN_KEYS = 5


def read_checkpoint(path: Path | str) -> Any:
    """Load a checkpoint file (on the CPU) with ``weights_only`` safety.

    Raises:
        CheckpointError: when the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint: {exc}") from exc


def state_dict_of(payload: Any, path: Path | str) -> dict[str, torch.Tensor]:
    """The model state_dict inside a loaded checkpoint (see the module docstring).

    Raises:
        CheckpointError: when ``payload`` holds no state_dict.
    """
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path}: expected a dict, found {type(payload).__name__}")
    for key in _WRAPPER_KEYS:
        if key in payload and isinstance(payload[key], Mapping):
            log.debug("%s: using the state_dict under key %r", path, key)
            payload = payload[key]
            break
    tensors = {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f"{path}: no tensors found (expected a state_dict, or one under "
            f"{' / '.join(repr(k) for k in _WRAPPER_KEYS)})"
        )
    return {str(k).removeprefix("module."): v for k, v in tensors.items()}


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read the model's state_dict from a checkpoint file (on the CPU).

    Raises:
        CheckpointError: when the file is missing, unreadable or holds no state_dict.
    """
    return state_dict_of(read_checkpoint(path), path)


def check_state_dict(state: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """Raise CheckpointError naming keys or shapes when ``state`` is not TumorResNetFCN's."""
    expected = build_model().state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: not a TumorResNetFCN checkpoint: {len(missing)} missing keys "
            f"{missing[:_SHOWN_KEYS]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:_SHOWN_KEYS]}"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise CheckpointError(f"{path}: tensor shapes differ from TumorResNetFCN: {wrong[:3]}")


def model_from_state_dict(state: Mapping[str, torch.Tensor], path: Path | str) -> TumorResNetFCN:
    """TumorResNetFCN in eval mode with ``state`` loaded strictly (checked first)."""
    check_state_dict(state, path)
    model = build_model()
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_model(path: Path | str) -> TumorResNetFCN:
    """Build TumorResNetFCN and load the checkpoint's weights with ``strict=True``.

    Returns:
        The model in eval mode on the CPU.

    Raises:
        CheckpointError: naming the file and the first missing/unexpected keys when the
            checkpoint is from another architecture, or the mismatching shapes.
    """
    return model_from_state_dict(load_state_dict(path), path)
