"""``make bench``'s preparation: the bench slide, the weights and the exported repositories.

:func:`prepare` makes what :mod:`wsi_bench.cli` measures: a synthetic slide (seed
``--seed``), a checkpoint (``--checkpoint``, trained here with the demo's recipe, or seeded
random-init weights: ``--weights``), its FP32 ``python-onnxruntime`` repository and, with
``--int8``, its INT8 one (:mod:`wsi_bench.int8`). :func:`synth_and_export` also serves
``make soak``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_bench import BenchError
from wsi_tumor import contract

SEEDED_WEIGHTS = "seeded random-init weights"
"""How the report names ``--weights seeded`` (whose map agreement says little)."""


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` made: the slide, its geometry, the weights and the repository."""

    slide: Path
    checkpoint: Path
    repository: Path
    geometry: dict[str, Any]
    crop: npt.NDArray[np.uint8]
    int8_repository: Path | None = None
    weights: str = SEEDED_WEIGHTS


def _seeded_checkpoint(path: Path) -> Path:
    import torch

    from wsi_tumor.models import build_model

    torch.manual_seed(0)
    torch.save({"model": build_model().state_dict(), "epoch": 0, "config": {"seed": 0}}, path)
    return path


def synth_and_export(
    workdir: Path, *, slides: int, size: int, seed: int, checkpoint: Path | None
) -> tuple[list[Path], Path, Path]:
    """Synthetic slides, a checkpoint (seeded weights unless given) and its exported
    ``python-onnxruntime`` repository under ``workdir``.

    Returns:
        (slide paths, checkpoint, repository).
    """
    from wsi_tumor.data.cli import main as synth_main
    from wsi_tumor.export.cli import ExportConfig, run_export

    data = workdir / "data"
    code = synth_main(
        [str(data), "--train", str(slides), "--valid", "0", "--test", "0", "--size", str(size),
         "--seed", str(seed), "--quiet"]
    )  # fmt: skip
    paths = sorted((data / "images").glob("*.tif"))
    if code != 0 or not paths:
        raise BenchError(f"wsi-synth failed ({code}) in {data}")
    checkpoint = checkpoint or _seeded_checkpoint(workdir / "checkpoint.pt")
    repository = workdir / "model_repository"
    run_export(
        ExportConfig(
            checkpoint=checkpoint,
            repository=repository,
            runtime="python-onnxruntime",
            parity_patches=8,
        )
    )
    return paths, checkpoint, repository


def prepare(args: argparse.Namespace, workdir: Path) -> Prepared:
    """Synthetic slide, checkpoint and exported repositories (FP32, INT8) under ``workdir``."""
    from wsi_bench.int8 import export_int8, quick_checkpoint, training_set

    checkpoint, weights = args.checkpoint, f"the checkpoint {args.checkpoint}"
    train = checkpoint is None and args.weights == "trained"
    data = training_set(workdir, size=args.size, seed=args.seed) if args.int8 or train else None
    if train and data is not None:
        checkpoint = quick_checkpoint(data, workdir, seed=args.seed)
        weights = "weights trained in this run (demo recipe, synthetic training set)"
    elif checkpoint is None:
        weights = SEEDED_WEIGHTS
    slides, checkpoint, repository = synth_and_export(
        workdir, slides=1, size=args.size, seed=args.seed, checkpoint=checkpoint
    )
    int8 = None
    if args.int8 and data is not None:
        patches, regions = args.calibration_patches, args.calibration_regions
        int8 = export_int8(checkpoint, data, workdir, patches, regions)
    geometry, crop = slide_geometry(slides[0], contract.REGION_CELLS)
    return Prepared(slides[0], checkpoint, repository, geometry, crop, int8, weights)


def slide_geometry(slide_path: Path, cells: int) -> tuple[dict[str, Any], npt.NDArray[np.uint8]]:
    """Tissue cells, regions, mean tissue fraction of an occupied region, and a crop.

    The crop is a tissue-rich level-0 square for perf_analyzer's detector requests.
    """
    from wsi_tumor.client.grid import plan_dense_regions, plan_regions
    from wsi_tumor.slide import open_slide, tissue_mask

    with open_slide(slide_path) as slide:
        mask = np.asarray(tissue_mask(slide, contract.MASK_LEVEL), bool)
        regions = plan_regions(mask, cells)
        dense_regions = plan_dense_regions(mask)
        width, height = slide.level_dimensions[0]
        side = min(width, height, 2048)
        row, col = np.argwhere(mask).mean(axis=0)
        x = int(np.clip(col * contract.PATCH_STRIDE - side / 2, 0, width - side))
        y = int(np.clip(row * contract.PATCH_STRIDE - side / 2, 0, height - side))
        crop = slide.read_region((x, y), (side, side), contract.INFERENCE_LEVEL)
    geometry = {
        "width": width,
        "height": height,
        "tissue_cells": int(mask.sum()),
        "regions": len(regions),
        "dense_regions": len(dense_regions),
        "tissue_fraction": round(float(mask.sum()) / (len(regions) * cells * cells), 3),
        "dense_tissue_fraction": round(
            float(mask.sum()) / sum(region.cells**2 for region in dense_regions), 3
        ),
    }
    return geometry, np.asarray(crop, np.uint8)
