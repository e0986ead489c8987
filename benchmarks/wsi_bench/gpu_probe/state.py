"""What the stages of one run share (:class:`Context`) and the data they pass on: the slide's
tiles, the check set, the sweep's batch shapes. Stage modules import this one, never the
runner, so the package has no import circle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from wsi_bench.budget import Budget
from wsi_bench.gpu_probe.network import Networks
from wsi_bench.gpu_probe.plan import Plan
from wsi_bench.gpu_probe.report import Probe
from wsi_tumor.models.resnet_fcn import TumorResNetFCN


@dataclass
class Block:
    """The slide's whole JPEG tile streams, row-major over a (columns, rows) grid."""

    tile: tuple[int, int]
    grid: tuple[int, int]
    streams: list[bytes]
    stored_bytes: int

    @property
    def megapixels(self) -> float:
        """Decoded megapixels of the whole block."""
        return len(self.streams) * self.tile[0] * self.tile[1] / 1e6


@dataclass
class Reference:
    """The check set: the float32 CPU network (with the probe's head unless trained), UINT8
    regions [N, S, S, 3] and their reference dense and exact logits [N, k, k]."""

    model: TumorResNetFCN
    regions: npt.NDArray[np.uint8]
    dense: npt.NDArray[np.float32]
    exact: npt.NDArray[np.float32]


@dataclass
class Shape:
    """One batch shape of the sweep with its device inputs and float32 baseline output."""

    mode: str
    cells: int
    regions: int
    inputs: list[torch.Tensor]
    baseline: npt.NDArray[np.float32] | None = None

    @property
    def cells_per_call(self) -> int:
        """Cells one call classifies."""
        return self.regions * self.cells * self.cells


@dataclass
class Context:
    """One run's settings, record and what earlier stages produced; a stage is a function
    ``(Context, deadline) -> note``."""

    plan: Plan
    device: torch.device
    budget: Budget
    probe: Probe
    seed: int
    checkpoint: Path | None
    scratch: Path
    no_compile: bool = False
    grids: dict[str, Any] = field(default_factory=dict)
    block: Block | None = None
    canvas: npt.NDArray[np.uint8] | None = None
    reference: Reference | None = None
    nets: Networks | None = None
    shapes: list[Shape] = field(default_factory=list)

    def slide(self) -> tuple[Block, npt.NDArray[np.uint8]]:
        """The slide stage's block and decoded canvas (RuntimeError when it produced none)."""
        if self.block is None or self.canvas is None:
            raise RuntimeError("the slide stage produced no tiles")
        return self.block, self.canvas

    def checked(self) -> tuple[Reference, Networks]:
        """The reference stage's check set and networks (RuntimeError when it produced none)."""
        if self.reference is None or self.nets is None:
            raise RuntimeError("the reference stage produced no reference")
        return self.reference, self.nets
