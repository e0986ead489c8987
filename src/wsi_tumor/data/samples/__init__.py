"""Small real data shipped with the package (see README.md in this folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

REAL_HE: Final = Path(__file__).resolve().parent / "OS-1-detail.ome.tif"
"""A 1101 px single-level tiled JPEG OME-TIFF of real H&E breast tissue (OpenSlide test data)."""
