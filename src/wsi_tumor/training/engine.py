"""One training epoch and one validation pass (BCE with logits, patch accuracy)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from wsi_tumor.training.distributed import DistInfo, all_reduce_sum

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class EpochStats:
    """Totals of one pass, summed over every process."""

    loss: float
    accuracy: float
    patches: int
    seconds: float
    steps: int

    @property
    def patches_per_s(self) -> float:
        """Patches processed per second by the whole job."""
        return self.patches / self.seconds if self.seconds > 0 else 0.0


def flatten_batch(batch: Batch, device: torch.device) -> Batch:
    """[B, 9, 3, H, W] patches and [B, 9] labels -> [B*9, 3, H, W] and [B*9]."""
    images, labels = batch
    images = images.reshape(-1, *images.shape[-3:]).to(device, non_blocking=True)
    return images, labels.reshape(-1).to(device, non_blocking=True)


def _autocast(device: torch.device, amp: bool) -> torch.autocast | nullcontext[None]:
    if not amp:
        return nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _reduce(
    sums: list[float], start: float, steps: int, info: DistInfo, device: torch.device
) -> EpochStats:
    total = all_reduce_sum(torch.tensor(sums, dtype=torch.float64, device=device), info)
    loss_sum, correct, count = (float(v) for v in total.cpu())
    count = max(count, 1.0)
    return EpochStats(
        loss_sum / count, correct / count, int(count), time.perf_counter() - start, steps
    )


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    info: DistInfo,
    epoch: int,
    max_steps: int | None = None,
    quiet: bool = False,
) -> EpochStats:
    """Train for one epoch (at most ``max_steps`` steps).

    Args:

    Returns:
        Mean BCE loss and patch accuracy over the patches seen, with throughput.
    """
    model.train()
    criterion = nn.BCEWithLogitsLoss(reduction="mean")
    amp = scaler is not None and scaler.is_enabled()
    loss_sum = correct = count = 0.0
    start = time.perf_counter()
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    if max_steps is not None:
        total = min(total, max_steps) if total is not None else max_steps
    bar = tqdm(
        total=total,
        desc=f"epoch {epoch}",
        unit="step",
        disable=quiet or not info.is_main,
        leave=False,
        dynamic_ncols=True,
    )
    steps = 0
    for batch in loader:
        if max_steps is not None and steps >= max_steps:
            break
        images, labels = flatten_batch(batch, device)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            logits = model(images).reshape(-1)
            loss = criterion(logits.float(), labels)
        if scaler is not None and amp:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        steps += 1
        n = labels.numel()
        loss_value = float(loss.detach())
        loss_sum += loss_value * n
        correct += float(((logits.detach() > 0).float() == labels).sum())
        count += n
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{loss_value:.4f}", patches_s=f"{count / elapsed:.1f}")
        bar.update(1)
    bar.close()
    return _reduce([loss_sum, correct, count], start, steps, info, device)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    info: DistInfo,
    amp: bool = False,
    max_steps: int | None = None,
    quiet: bool = False,
) -> EpochStats:
    """Validation loss and patch accuracy (logit > 0, i.e. probability > 0.5)."""
    model.eval()
    criterion = nn.BCEWithLogitsLoss(reduction="sum")
    loss_sum = correct = count = 0.0
    start = time.perf_counter()
    steps = 0
    for batch in tqdm(
        loader,
        desc="validate",
        unit="step",
        leave=False,
        disable=quiet or not info.is_main,
        dynamic_ncols=True,
    ):
        if max_steps is not None and steps >= max_steps:
            break
        images, labels = flatten_batch(batch, device)
        with _autocast(device, amp):
            logits = model(images).reshape(-1).float()
        loss_sum += float(criterion(logits, labels))
        correct += float(((logits > 0).float() == labels).sum())
        count += labels.numel()
        steps += 1
    return _reduce([loss_sum, correct, count], start, steps, info, device)
