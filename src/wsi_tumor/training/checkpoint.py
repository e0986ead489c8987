"""Training checkpoints (save, resume), ``--init-from`` weights and ``--pretrained``.

A training checkpoint is a dict ``{"model", "optimizer", "scheduler", "scaler", "epoch",
"best_metric", "config", "history"}``; ``model`` is the bare TumorResNetFCN state_dict (no DDP
``module.`` prefix), so :func:`wsi_tumor.models.checkpoint.load_model` and MONAI read it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from wsi_tumor.errors import CheckpointError, ConfigError
from wsi_tumor.fileio import atomic_path
from wsi_tumor.models.checkpoint import check_state_dict, load_state_dict, state_dict_of

log = logging.getLogger(__name__)

BEST_NAME: Final = "best.pt"
LAST_NAME: Final = "last.pt"
_REQUIRED: Final = ("model", "optimizer", "scheduler", "epoch")
# torchvision ResNet18 top-level modules -> index inside TumorResNetFCN.features
_TV_TO_FEATURES: Final = {
    "conv1": 0,
    "bn1": 1,
    "layer1": 4,
    "layer2": 5,
    "layer3": 6,
    "layer4": 7,
}


@dataclass
class TrainState:
    """What ``--resume`` restores besides the weights."""

    epoch: int = 0
    """Epochs already completed."""
    best_metric: float = float("-inf")
    history: list[dict[str, float]] = field(default_factory=list)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    state: TrainState,
    config: Mapping[str, Any],
) -> Path:
    """Write a training checkpoint atomically (temporary file then rename)."""
    payload = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": state.epoch,
        "best_metric": state.best_metric,
        "history": state.history,
        "config": dict(config),
    }
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights checked strictly).

    Raises:
        CheckpointError: missing or unreadable file, a key of the training layout missing
            (named), or weights from another architecture.
    """
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        payload: Any = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint: {exc}") from exc
    check_state_dict(state_dict_of(payload, path), path)  # names the keys on a mismatch
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(
            f"{path}: not a wsi-train checkpoint (keys {missing} missing); "
            "use --init-from to start from bare weights"
        )
    return dict(payload)


def restore(
    payload: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
) -> TrainState:
    """Load model, optimizer, scheduler and scaler state; return the epoch counters."""
    unwrap(model).load_state_dict(
        {k.removeprefix("module."): v for k, v in payload["model"].items()}, strict=True
    )
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    return TrainState(
        epoch=int(payload["epoch"]),
        best_metric=float(payload.get("best_metric", float("-inf"))),
        history=list(payload.get("history", [])),
    )


def init_weights(model: nn.Module, path: Path) -> None:
    """Load weights (ours or the MONAI bundle's ``model.pt``) with ``strict=True``.

    Raises:
        CheckpointError: the file is missing or from another architecture (keys named).
    """
    state = load_state_dict(path)
    check_state_dict(state, path)  # names the keys or shapes on a mismatch
    unwrap(model).load_state_dict(state, strict=True)
    log.info("initialised weights from %s", path)


def pretrained_path() -> Path:
    """Where torchvision's ImageNet ResNet18 weights are expected in the torch hub cache."""
    from torchvision.models import ResNet18_Weights

    filename = ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_pretrained(model: nn.Module) -> None:
    """Copy the locally cached ImageNet ResNet18 weights into ``features.*``; never download.

    The classifier ``fc`` keeps its random initialisation (ImageNet has 1000 classes), as in
    MONAI's ``TorchVisionFCModel(pretrained=True)``.

    Raises:
        ConfigError: the weights file is not in the cache (the message names where to put it).
        CheckpointError: the file does not hold ResNet18 weights.
    """
    path = pretrained_path()
    if not path.is_file():
        raise ConfigError(
            f"--pretrained: {path} not found; copy torchvision's ResNet18 ImageNet weights "
            f"there (or set TORCH_HOME so that $TORCH_HOME/hub/checkpoints/{path.name} exists); "
            "nothing is downloaded"
        )
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files raise many types
        raise CheckpointError(f"{path}: cannot read: {exc}") from exc
    mapped = {}
    for key, value in source.items():
        head, _, rest = key.partition(".")
        if head in _TV_TO_FEATURES:
            mapped[f"features.{_TV_TO_FEATURES[head]}.{rest}"] = value
    target = unwrap(model)
    expected = {k for k in target.state_dict() if k.startswith("features.")}
    if set(mapped) != expected:
        raise CheckpointError(
            f"{path}: not ResNet18 weights ({len(expected - set(mapped))} feature keys missing)"
        )
    target.load_state_dict(mapped, strict=False)
    log.info("ImageNet ResNet18 weights loaded from %s", path)
