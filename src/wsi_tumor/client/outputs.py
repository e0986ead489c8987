"""A slide's output files, written atomically: temporary name, then rename when whole.

Per slide ``<stem>`` in the output directory:

- ``<stem>.npy``: float32 (rows, cols) probability map at the mask level (MONAI
  ``ProbMapProducer`` layout: row = y, col = x, 0 off tissue);
- ``<stem>_mask.png``: the tissue mask (white = tissue), one pixel per cell;
- ``<stem>_heatmap.png``: the map over the slide thumbnail;
- ``<stem>.csv``: CAMELYON16 ``prob,x,y`` lesion candidates (level 0, x = column);
- ``<stem>.geojson``: the same candidates as QuPath-importable points;
- ``<stem>.json``: counts, timings, the config and the SHA-256 of every other output,
  written last: the slide is complete when it exists and every file matches its checksum,
  so a file cut short by a full disk or a crash is found on the next run and the slide
  recomputed. Recomputing a slide deletes the report first, so an interrupted run never
  leaves a complete-looking mix of old and new files.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_tumor.evaluation.nms import write_detections
from wsi_tumor.fileio import atomic_path, file_checksum

CLASSIFICATION = "Tumor"
"""QuPath classification of the detected points."""
CLASSIFICATION_COLOR = (200, 0, 0)
"""RGB of QuPath's built-in 'Tumor' class (QuPath >= 0.3 writes colours as [r, g, b])."""


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


def output_stem(slide: Path) -> str:
    """The name a slide's outputs take: the file name without its slide endings.

    ``tumor_001.tif`` -> ``tumor_001``; ``x.ome.tif`` -> ``x``; a DICOM WSI folder -> the
    folder's name.
    """
    if slide.is_dir():
        return slide.name
    stem = slide.stem
    return stem[: -len(".ome")] if stem.lower().endswith(".ome") else stem


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

    def checksums(self) -> dict[str, str]:
        """``sha256:<hex>`` of every output but the report, by file name (for the report)."""
        return {path.name: file_checksum(path) for path in self.all_paths()[:-1]}

    def problem(self) -> str | None:
        """Why the outputs are not a complete, intact set; None when they are.

        Complete means: the report exists and parses, and every output it lists exists with
        the checksum the report recorded (a file cut short by a full disk or a crash, or
        changed since, does not match).
        """
        if not self.report.is_file():
            return "no report"
        try:
            recorded = json.loads(self.report.read_text(encoding="utf-8")).get("checksums")
        except (OSError, ValueError, AttributeError) as exc:
            return f"{self.report.name} does not parse ({exc})"
        if not isinstance(recorded, dict):
            return f"{self.report.name} records no checksums"
        for path in self.all_paths()[:-1]:
            if not path.is_file():
                return f"{path.name} is missing"
            expected = recorded.get(path.name)
            if expected is None or file_checksum(path) != expected:
                return f"{path.name} does not match its recorded checksum"
        return None

    def complete(self) -> bool:
        """Whether the outputs are a complete, intact set (see :meth:`problem`)."""
        return self.problem() is None

    def invalidate(self) -> None:
        """Remove the completion marker before the slide is recomputed.

        Also removes temporary files a killed run left behind for these outputs.
        """
        self.report.unlink(missing_ok=True)
        for path in self.all_paths():
            for leftover in self.out.glob(f".{glob.escape(path.name)}.*.tmp"):
                leftover.unlink(missing_ok=True)
