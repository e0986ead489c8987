"""What the stages of one run share: its settings, the record being filled, and what earlier
stages produced (the slide, the reference, the networks and the sweep's shapes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from wsi_bench.gpu_probe.budget import Budget
from wsi_bench.gpu_probe.config import Plan
from wsi_bench.gpu_probe.network import Networks
from wsi_bench.gpu_probe.reference import Reference
from wsi_bench.gpu_probe.report import Probe
from wsi_bench.gpu_probe.sweep import Shape
from wsi_bench.gpu_probe.tiff_jpeg import TileSet


@dataclass
class Context:
    """One run's shared state; each stage is a function ``(Context, deadline) -> note``.

    Attributes:
        plan: The run's sizes.
        device: Where the device stages run.
        budget: The run's budget.
        probe: The record the report is written from.
        grids: Arrays saved to ``gpu_probe_grids.npz``.
        seed: Seed of the synthetic slide, the random network and the sweep's regions.
        checkpoint: Trained weights, or None for the seeded random network.
        slide_in: A JPEG-tiled TIFF to read instead of writing the synthetic one.
        slide_out: Where to keep the synthetic slide (None: under ``scratch``).
        scratch: A temporary folder for the run.
        no_compile: Skip the torch.compile stage.
        tileset: The slide's raw tiles (set by the slide stage).
        canvas: The decoded block [H, W, 3] (set by the slide stage).
        reference: The check set's reference (set by the reference stage).
        nets: The networks on the device (set by the reference stage).
        shapes: The sweep's batch shapes (set by the network stage).
    """

    plan: Plan
    device: torch.device
    budget: Budget
    probe: Probe
    grids: dict[str, Any]
    seed: int
    checkpoint: Path | None
    slide_in: Path | None
    slide_out: Path | None
    scratch: Path
    no_compile: bool = False
    tileset: TileSet | None = None
    canvas: npt.NDArray[np.uint8] | None = None
    reference: Reference | None = None
    nets: Networks | None = None
    shapes: list[Shape] = field(default_factory=list)

    def slide(self) -> tuple[TileSet, npt.NDArray[np.uint8]]:
        """The slide stage's tiles and decoded block.

        Raises:
            RuntimeError: when the slide stage produced none (the runner stops before).
        """
        if self.tileset is None or self.canvas is None:
            raise RuntimeError("the slide stage produced no tiles")
        return self.tileset, self.canvas

    def checked(self) -> tuple[Reference, Networks]:
        """The reference stage's check set and the networks on the device.

        Raises:
            RuntimeError: when the reference stage produced none (the runner stops before).
        """
        if self.reference is None or self.nets is None:
            raise RuntimeError("the reference stage produced no reference")
        return self.reference, self.nets
