"""tiffslide backend: a pyramid stored in SubIFDs (OME-TIFF's layout), which cuCIM and
OpenSlide read as a single level.

tiffslide (a pure-Python, OpenSlide-compatible reader over tifffile) sees the SubIFD levels
as the series' pyramid. Each read goes through tifffile's file handle, which serialises the
file access under its own lock, so several reader threads may share one object.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_tumor.errors import ReaderUnavailableError, SlideFormatError
from wsi_tumor.slide.base import SlideReader
from wsi_tumor.slide.damage import DamageChecker
from wsi_tumor.slide.image import downsamples_from_dimensions
from wsi_tumor.slide.validate import SlideInfo, trusted_levels

log = logging.getLogger(__name__)


def _tiffslide() -> Any:
    try:
        import tiffslide
    except Exception as exc:
        raise ReaderUnavailableError(
            f"reader 'tiffslide' is unavailable: cannot import tiffslide ({exc}); "
            "install tiffslide or use reader='cucim'"
        ) from exc
    return tiffslide


class TiffSlideSlide(SlideReader):
    """A slide read through tiffslide; build it with :func:`wsi_tumor.slide.open_slide`.

    Args:
        info: The pre-flight description of the file (from ``inspect_slide``).

    Raises:
        ReaderUnavailableError: tiffslide is not installed.
        SlideFormatError: tiffslide cannot open the file or sees other levels.
    """

    reader_name = "tiffslide"

    def __init__(self, info: SlideInfo) -> None:
        tiffslide = _tiffslide()
        path = info.path
        try:
            self._slide = tiffslide.TiffSlide(str(path))
        except Exception as exc:
            raise SlideFormatError(f"{path}: tiffslide cannot open the slide: {exc}") from exc
        try:
            dimensions = trusted_levels(path, "tiffslide", list(self._slide.level_dimensions), info)
        except SlideFormatError:
            self._slide.close()
            raise
        super().__init__(
            path,
            dimensions,
            downsamples_from_dimensions(dimensions),
            info.mpp,
            info.mpp_source,
            info.format,
        )
        if any(info.tile_tables):
            self.damage_checker = DamageChecker(info.path, info.tile_tables)

    def _read_level(
        self, level: int, col: int, row: int, width: int, height: int
    ) -> npt.NDArray[np.uint8]:
        downsample = self._downsamples[level]
        x0, y0 = round(col * downsample), round(row * downsample)
        try:
            pixels = np.asarray(
                self._slide.read_region((x0, y0), level, (width, height), as_array=True)
            )
        except Exception as exc:
            raise SlideFormatError(
                f"{self._path}: tiffslide failed to read level {level} ({col}, {row}) "
                f"{width} x {height}: {exc}"
            ) from exc
        # tifffile's JPEG decoder honours the JFIF marker: no YCbCr fix-up needed here
        return np.ascontiguousarray(pixels[..., :3])

    def _close(self) -> None:
        self._slide.close()
