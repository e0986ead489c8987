"""In-process PyTorch baseline over MONAI's patch locations (no server, no regions).

This is what a MONAI user runs: ``MaskedPatchWSIDataset(mask_level=6, patch_size=224)``
patches, one 224 x 224 read per foreground cell, the network in eager mode, sigmoid, and
``ProbMapProducer``'s (rows, cols) map. Tests compare the streamed map with it and the
benchmark uses it as the baseline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.slide.base import SlideReader

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceResult:
    """The reference map and how long it took.

    Attributes:
        prob_map: float32 (rows, cols), 0 off tissue.
        patches: Patches classified.
        read_s: Seconds spent reading patches.
        compute_s: Seconds spent in the network.
    """

    prob_map: npt.NDArray[np.float32]
    patches: int
    read_s: float
    compute_s: float

    @property
    def patches_per_s(self) -> float:
        """Throughput over reading and compute."""
        total = self.read_s + self.compute_s
        return self.patches / total if total > 0 else 0.0


def read_patch(slide: SlideReader, col: int, row: int) -> npt.NDArray[np.float32]:
    """The normalised CHW patch of mask cell (col, row), read alone at level 0."""
    size = contract.PATCH_SIZE
    pixels = slide.read_region(
        contract.cell_patch_origin(col, row), (size, size), contract.INFERENCE_LEVEL
    )
    return contract.normalise(pixels).transpose(2, 0, 1)


def reference_probability_map(
    slide: SlideReader,
    mask: npt.NDArray[np.bool_],
    model: torch.nn.Module,
    *,
    batch_size: int = 32,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> ReferenceResult:
    """Classify every foreground cell's patch with ``model`` in this process.

    Args:
        slide: The slide.
        mask: BOOL (rows, cols) tissue mask at ``contract.MASK_LEVEL``.
        model: A ``TumorResNetFCN`` (logits [N, 1, 1, 1]).
        batch_size: Patches per forward pass.
        device: Torch device.
        progress: Called with the number of patches of each finished batch.

    Returns:
        The map (sigmoid of the logit at each cell, 0 elsewhere) and timings.
    """
    import torch

    model = model.to(device).eval()
    prob_map = np.zeros(mask.shape, dtype=np.float32)
    rows, cols = np.nonzero(mask)
    log.debug("reference: %d patches", len(rows))
    read_s = compute_s = 0.0
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            tick = time.perf_counter()
            batch = np.stack(
                [
                    read_patch(slide, int(c), int(r))
                    for r, c in zip(rows[start:stop], cols[start:stop], strict=True)
                ]
            )
            tock = time.perf_counter()
            logits = model(torch.from_numpy(batch).to(device))
            probs = torch.sigmoid(logits.reshape(len(batch), -1)[:, 0]).cpu().numpy()
            compute_s += time.perf_counter() - tock
            read_s += tock - tick
            prob_map[rows[start:stop], cols[start:stop]] = probs
            if progress is not None:
                progress(stop - start)
    return ReferenceResult(prob_map, len(rows), read_s, compute_s)
