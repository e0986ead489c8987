"""Way (a), the baseline a MONAI user runs today, as its own process.

MONAI's ``MaskedPatchWSIDataset(mask_level=6, patch_size=224)`` through its cuCIM
``WSIReader`` (one 224 x 224 read per level-6 tissue cell), the bundle's intensity scaling,
a ``DataLoader``, ``TorchVisionFCModel("resnet18", num_classes=1, use_conv=True)`` loaded
with our weights, sigmoid, and the map written at each patch's ``mask_location`` (what
``ProbMapProducer`` does). Run: ``python -m wsi_bench.baseline SLIDE CKPT MAP JSON``.

MONAI's locations and in-slide pixels are exactly ours; the one difference is the part of a
border patch that lies outside the slide, which cuCIM returns black and our readers fill
with white (``wsi_tumor.slide.FILL_VALUE``). :class:`FillOutsideSlide`, the first transform,
paints those pixels white so the maps agree everywhere (it touches only border patches).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsi_tumor import contract
from wsi_tumor.commandline import make_parser
from wsi_tumor.fileio import peak_rss_mib, write_json

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Flags of the baseline process."""
    parser = make_parser("wsi_bench.baseline", __doc__)
    parser.add_argument("slide", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("map", type=Path, help="where the probability map (.npy) goes")
    parser.add_argument("report", type=Path, help="where the timings (.json) go")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    return parser


class FillOutsideSlide:
    """Set the pixels of a patch that lie outside the level-0 slide to ``FILL_VALUE``.

    Args:
        width: Level-0 width of the slide.
        height: Level-0 height.
    """

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        """Fill ``data["image"]`` (C, H, W) outside the slide; MONAI's location is (y, x)."""
        from wsi_tumor.slide import FILL_VALUE

        image = data["image"]
        y, x = (int(v) for v in image.meta["location"])
        _, rows, cols = image.shape
        top, left = max(0, -y), max(0, -x)
        bottom, right = min(rows, self.height - y), min(cols, self.width - x)
        if (top, left, bottom, right) == (0, 0, rows, cols):
            return data
        inside = image[:, top:bottom, left:right].clone()
        image[...] = FILL_VALUE
        image[:, top:bottom, left:right] = inside
        return data


def monai_model(checkpoint: Path) -> Any:
    """MONAI's TorchVisionFCModel (the bundle's network) with the checkpoint's weights."""
    import torch
    from monai.networks.nets import TorchVisionFCModel

    from wsi_tumor.models.checkpoint import load_model

    model = TorchVisionFCModel("resnet18", num_classes=1, use_conv=True, pretrained=False)
    model.load_state_dict(load_model(checkpoint).state_dict(), strict=True)
    return model.eval().to(torch.device("cpu"))


def run_baseline(
    slide: Path, checkpoint: Path, batch_size: int, workers: int, threads: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Classify every MONAI patch of ``slide`` in this process; return the map and timings."""
    import torch
    from monai.data import DataLoader, MaskedPatchWSIDataset
    from monai.transforms import CastToTyped, Compose, ScaleIntensityRanged, ToTensord

    from wsi_tumor.slide import open_slide

    torch.set_num_threads(threads)
    start = time.perf_counter()
    with open_slide(slide) as reader:
        width, height = reader.level_dimensions[0]
    lo, hi = contract.INTENSITY_IN
    out_lo, out_hi = contract.INTENSITY_OUT
    transform = Compose(
        [
            FillOutsideSlide(width, height),
            CastToTyped(keys="image", dtype=np.float32),
            ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=out_lo, b_max=out_hi),
            ToTensord(keys="image", track_meta=False),
        ]
    )
    dataset = MaskedPatchWSIDataset(
        [{"image": str(slide)}],
        patch_size=contract.PATCH_SIZE,
        patch_level=contract.INFERENCE_LEVEL,
        mask_level=contract.MASK_LEVEL,
        transform=transform,
        additional_meta_keys=("location", "mask_location", "name"),
        reader="cuCIM",
    )
    locations = np.array([sample["mask_location"] for sample in dataset.data], dtype=np.int64)
    map_shape = tuple(int(v) for v in dataset.data[0]["mask_size"])
    model = monai_model(checkpoint)
    setup_s = time.perf_counter() - start
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        shuffle=False,
        persistent_workers=False,
    )
    probabilities = np.empty(len(dataset), dtype=np.float32)
    done = 0
    compute_s = 0.0
    tick = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            images = torch.as_tensor(batch["image"])
            tock = time.perf_counter()
            logits = model(images)
            probs = torch.sigmoid(logits.reshape(len(images), -1)[:, 0]).numpy()
            compute_s += time.perf_counter() - tock
            probabilities[done : done + len(probs)] = probs
            done += len(probs)
    infer_s = time.perf_counter() - tick
    prob_map = np.zeros(map_shape, dtype=np.float32)
    prob_map[locations[:, 0], locations[:, 1]] = probabilities  # (row, col) = (y, x)
    report = {
        "patches": int(done),
        "map_shape": list(map_shape),
        "setup_s": round(setup_s, 3),
        "infer_s": round(infer_s, 3),
        "compute_s": round(compute_s, 3),
        "read_wait_s": round(infer_s - compute_s, 3),
        "patches_per_s": round(done / infer_s, 2) if infer_s else 0.0,
        "batch_size": batch_size,
        "workers": workers,
        "torch_threads": threads,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    return prob_map, report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the baseline and write its map and report."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    prob_map, report = run_baseline(
        args.slide, args.checkpoint, args.batch_size, args.workers, args.threads
    )
    np.save(args.map, prob_map)
    write_json(args.report, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
