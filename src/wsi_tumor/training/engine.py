"""One training epoch and one validation pass (BCE with logits, patch accuracy).

A batch holds patches ``[B, 9, 3, 224, 224]`` (the ``patch`` objective) or dense crops
``[B, 3, 736, 736]``; the ``mixed`` objective runs a crop batch twice, cut into its nine
patches and whole, each view with its own backward pass (the first without a DDP gradient
sync), and its loss is the two views' mean. With a ``consistency`` weight the whole view's
loss also holds that weight times the mean squared difference between its labelled-cell logits
and the patch view's (held fixed): the dense map is pulled onto the exact one, not both onto
each other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from tqdm import tqdm

from wsi_tumor.contract import PATCH_SIZE
from wsi_tumor.models.dense import FEATURE_STRIDE
from wsi_tumor.training.distributed import DistInfo, all_reduce_sum
from wsi_tumor.training.grid import (
    DENSE_CELLS,
    DENSE_CROP_OFFSET,
    GRID_CELL,
    Objective,
    patch_offsets,
)

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


class View(NamedTuple):
    """What one forward pass sees: images, flat labels, stride of the labelled outputs."""

    images: torch.Tensor
    labels: torch.Tensor
    stride: int = 0


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


LABEL_STRIDE = GRID_CELL // FEATURE_STRIDE
"""Outputs of the network's stride-1 pool between labelled cells of a dense crop (8)."""


def views(batch: Batch, device: torch.device, objective: Objective) -> list[View]:
    """The inputs the network sees for one batch, each with its flat labels and the stride of
    its labelled outputs (0: one output per patch).

    A crop's labels are its nine grid cells ([B, 9]) or all its 9 x 9 dense cells ([B, 81],
    ``--dense-labels cells``); the patch view of ``mixed`` takes the nine grid cells of them.
    """
    images, labels = batch
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    if objective == "patch":
        return [View(_channels_last(images.reshape(-1, *images.shape[-3:])), labels.reshape(-1))]
    all_cells = labels.shape[-1] == DENSE_CELLS * DENSE_CELLS
    stride = 2 if all_cells else LABEL_STRIDE  # outputs are 32 px apart, dense cells 64
    out = [View(_channels_last(images), labels.reshape(-1), stride)]
    if objective == "mixed":  # the patches first: the whole view's consistency term needs them
        grid = labels.reshape(-1, DENSE_CELLS, DENSE_CELLS)[:, ::4, ::4] if all_cells else labels
        starts = [o - DENSE_CROP_OFFSET for o in patch_offsets("centre")]
        cut = [images[..., y : y + PATCH_SIZE, x : x + PATCH_SIZE] for y in starts for x in starts]
        patches = torch.stack(cut, dim=1).reshape(-1, *cut[0].shape[1:])
        out.insert(0, View(_channels_last(patches), grid.reshape(-1)))
    return out


def _channels_last(images: torch.Tensor) -> torch.Tensor:
    # channels_last, as the model (trainer): oneDNN convolutions run faster in it on the CPU
    return images.contiguous(memory_format=torch.channels_last)


def view_logits(model: nn.Module, view: View) -> torch.Tensor:
    """Flat logits of patches, or of a dense crop's labelled cells (row-major per crop)."""
    logits = model(view.images)
    if view.stride:
        logits = logits[:, 0, :: view.stride, :: view.stride]
    return logits.reshape(-1)


def grid_cells(logits: torch.Tensor, view: View) -> torch.Tensor:
    """A whole view's logits at the nine grid cells (what the patch view computed)."""
    if view.stride != 2:
        return logits
    return logits.reshape(-1, DENSE_CELLS, DENSE_CELLS)[:, ::4, ::4].reshape(-1)


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
    objective: Objective = "patch",
    consistency: float = 0.0,
    amp: bool = False,
) -> EpochStats:
    """Train for one epoch (at most ``max_steps`` steps) on ``objective``'s views of a batch.

    Args:
        consistency: Weight of the whole view's squared logit difference from the patch view
            (``mixed`` only; see the module's docstring).
        amp: Run the forward pass under autocast (fp16 on CUDA with an enabled ``scaler``,
            bf16 on the CPU, which needs none: a disabled scaler passes the loss and the step
            through unchanged).

    Returns:
        Mean loss (BCE, plus the consistency term) and patch accuracy over the patches seen,
        with throughput.
    """
    model.train()
    criterion = nn.BCEWithLogitsLoss(reduction="mean")
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
    no_sync = getattr(model, "no_sync", None)  # DDP: accumulate all views, sync on the last
    steps = 0
    for batch in loader:
        if max_steps is not None and steps >= max_steps:
            break
        optimizer.zero_grad(set_to_none=True)
        parts = views(batch, device, objective)
        loss_value = 0.0
        reference: torch.Tensor | None = None  # the patch view's logits, for the whole view
        for i, view in enumerate(parts):
            labels = view.labels
            last = i == len(parts) - 1
            with nullcontext() if last or no_sync is None else no_sync():
                with _autocast(device, amp):
                    logits = view_logits(model, view).float()
                    loss = criterion(logits, labels)
                    if reference is not None:
                        at_grid = grid_cells(logits, view)
                        loss = loss + consistency * nn.functional.mse_loss(at_grid, reference)
                    loss = loss / len(parts)
                (scaler.scale(loss) if scaler is not None else loss).backward()
            if consistency > 0 and not last:
                reference = logits.detach()
            n, part_loss = labels.numel(), float(loss.detach())
            loss_value += part_loss
            loss_sum += part_loss * len(parts) * n
            correct += float(((logits.detach() > 0).float() == labels).sum())
            count += n
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        steps += 1
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
    objective: Objective = "patch",
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
        for view in views(batch, device, objective):
            labels = view.labels
            with _autocast(device, amp):
                logits = view_logits(model, view).float()
            loss_sum += float(criterion(logits, labels))
            correct += float(((logits > 0).float() == labels).sum())
            count += labels.numel()
        steps += 1
    return _reduce([loss_sum, correct, count], start, steps, info, device)
