"""A slide's output files, written atomically: temporary name, then rename when whole.

Per slide ``<stem>`` in the output directory:

- ``<stem>.npy``: float32 (rows, cols) probability map at the mask level (MONAI
  ``ProbMapProducer`` layout: row = y, col = x, 0 off tissue);
- ``<stem>_mask.png``: the tissue mask (white = tissue), one pixel per cell;
- ``<stem>_heatmap.png``: the map over the slide thumbnail;
- ``<stem>.csv``: CAMELYON16 ``prob,x,y`` lesion candidates (level 0, x = column);
- ``<stem>.geojson``: the same candidates as QuPath-importable points;
- ``<stem>.json``: counts, timings and the config, written last: its presence marks the
  slide complete. Recomputing a slide deletes it first, so an interrupted run never leaves
  a complete-looking mix of old and new files.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_tumor.evaluation.nms import write_detections

CLASSIFICATION = "Tumor"
"""QuPath classification of the detected points."""
CLASSIFICATION_COLOR = (200, 0, 0)
"""RGB of QuPath's built-in 'Tumor' class (QuPath >= 0.3 writes colours as [r, g, b])."""


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary file starts with a dot and ends in ``.tmp``, so it never looks like an
    output; it is removed when the block raises.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.open("xb").close()  # exclusive; permissions follow the umask, unlike mkstemp
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_npy(path: Path, array: npt.NDArray[Any]) -> Path:
    """Write ``array`` as ``.npy`` atomically."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    return path


def write_png(path: Path, image: npt.NDArray[np.uint8]) -> Path:
    """Write a uint8 (H, W) or (H, W, 3) image as PNG atomically."""
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format="PNG")
    return path


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def write_csv(path: Path, detections: npt.NDArray[np.float64]) -> Path:
    """Write CAMELYON16 ``prob,x,y`` lines (no header) atomically."""
    with atomic_path(path) as temporary:
        write_detections(temporary, detections)
    return path


def detections_geojson(detections: npt.NDArray[np.float64]) -> dict[str, Any]:
    """QuPath-importable GeoJSON: one Point per candidate in level-0 pixel coordinates.

    Args:
        detections: (n, 3) (prob, x, y).
    """
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
            "properties": {
                "objectType": "annotation",
                "name": f"candidate {i + 1} (p={prob:.3f})",
                "classification": {"name": CLASSIFICATION, "color": list(CLASSIFICATION_COLOR)},
                "probability": float(prob),
                "measurements": {"probability": float(prob)},
            },
        }
        for i, (prob, x, y) in enumerate(np.asarray(detections).reshape(-1, 3))
    ]
    return {"type": "FeatureCollection", "features": features}


@dataclass(frozen=True)
class SlideOutputs:
    """The output paths of one slide.

    Args:
        out: Output directory.
        stem: Slide name without extension.
    """

    out: Path
    stem: str

    @property
    def prob_map(self) -> Path:
        """``<stem>.npy``."""
        return self.out / f"{self.stem}.npy"

    @property
    def mask_png(self) -> Path:
        """``<stem>_mask.png``."""
        return self.out / f"{self.stem}_mask.png"

    @property
    def heatmap_png(self) -> Path:
        """``<stem>_heatmap.png``."""
        return self.out / f"{self.stem}_heatmap.png"

    @property
    def csv(self) -> Path:
        """``<stem>.csv``."""
        return self.out / f"{self.stem}.csv"

    @property
    def geojson(self) -> Path:
        """``<stem>.geojson``."""
        return self.out / f"{self.stem}.geojson"

    @property
    def report(self) -> Path:
        """``<stem>.json``: written last; marks the slide complete."""
        return self.out / f"{self.stem}.json"

    def all_paths(self) -> list[Path]:
        """Every output, the completion marker last."""
        return [
            self.prob_map,
            self.mask_png,
            self.heatmap_png,
            self.csv,
            self.geojson,
            self.report,
        ]

    def complete(self) -> bool:
        """Whether every output exists (the marker is written only after the others)."""
        return all(path.is_file() for path in self.all_paths())

    def invalidate(self) -> None:
        """Remove the completion marker before the slide is recomputed.

        Also removes temporary files a killed run left behind for these outputs.
        """
        self.report.unlink(missing_ok=True)
        for path in self.all_paths():
            for leftover in self.out.glob(f".{glob.escape(path.name)}.*.tmp"):
                leftover.unlink(missing_ok=True)
