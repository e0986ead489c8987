"""OpenSlide backend: ``openslide.OpenSlide`` (library from the ``openslide-bin`` wheel).

Thread safety: the OpenSlide C library documents ``openslide_t`` handles as safe to use
from several threads at once, and openslide-python's ctypes calls release the GIL, so no
lock is taken (checked by the concurrent-read test).

Two quirks of OpenSlide 4.0 are handled here:

- JPEG tiles tagged Photometric=RGB are decoded as RGB even when the streams are JFIF
  YCbCr; such levels (flagged by the pre-flight) are converted like in the cuCIM backend.
- OpenSlide's TIFF parser mis-reads the first-IFD offset of big-endian classic TIFFs and
  reports "Not a TIFF file" (the real H&E sample, a Bio-Formats OME-TIFF, is one). Like
  openslide-python's ``open_slide`` falling back to ``ImageSlide`` for images OpenSlide
  does not know, a single-level image OpenSlide cannot parse is decoded whole through
  tifffile when it fits :data:`FALLBACK_MAX_PIXELS`; otherwise SlideFormatError.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_tumor.errors import ReaderUnavailableError, SlideFormatError
from wsi_tumor.slide.base import SlideReader
from wsi_tumor.slide.damage import DamageChecker
from wsi_tumor.slide.image import downsamples_from_dimensions, ycbcr_to_rgb
from wsi_tumor.slide.metadata import plausible
from wsi_tumor.slide.validate import SlideInfo, trusted_levels

log = logging.getLogger(__name__)

FALLBACK_MAX_PIXELS = 1 << 26
"""Largest single-level image (about 67 Mpx, 192 MiB RGB) decoded whole by the fallback."""


def _openslide() -> Any:
    try:
        import openslide
    except Exception as exc:  # ImportError, or OSError when the C library is missing
        raise ReaderUnavailableError(
            f"reader 'openslide' is unavailable: cannot import openslide ({exc}); "
            "install openslide-python and openslide-bin or use reader='cucim'"
        ) from exc
    return openslide


class OpenSlideSlide(SlideReader):
    """A slide read through OpenSlide; build it with :func:`wsi_tumor.slide.open_slide`.

    Args:
        info: The pre-flight description of the file (from ``inspect_slide``).

    Raises:
        ReaderUnavailableError: openslide-python or the OpenSlide library is missing.
        SlideFormatError: OpenSlide cannot open the file and the fallback does not apply.
    """

    reader_name = "openslide"

    def __init__(self, info: SlideInfo) -> None:
        openslide = _openslide()
        path = info.path
        self._osr: Any = None
        self._pixels: npt.NDArray[np.uint8] | None = None
        try:
            self._osr = openslide.OpenSlide(str(path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            self._pixels = _fallback_pixels(info, exc)
        except openslide.OpenSlideError as exc:
            raise SlideFormatError(f"{path}: OpenSlide cannot open the slide: {exc}") from exc
        if self._osr is not None:
            try:
                dimensions = trusted_levels(
                    path, "OpenSlide", list(self._osr.level_dimensions), info
                )
            except SlideFormatError:
                self._osr.close()
                raise
            mpp, source = _mpp(self._osr.properties, info)
        else:
            dimensions = info.level_dimensions
            mpp, source = info.mpp, info.mpp_source
        super().__init__(
            path, dimensions, downsamples_from_dimensions(dimensions), mpp, source, info.format
        )
        if any(info.tile_tables):
            self.damage_checker = DamageChecker(info.path, info.tile_tables)
        self._ycbcr = info.ycbcr_levels

    def _read_level(
        self, level: int, col: int, row: int, width: int, height: int
    ) -> npt.NDArray[np.uint8]:
        if self._pixels is not None:
            return self._pixels[row : row + height, col : col + width].copy()
        downsample = self._downsamples[level]
        # OpenSlide paints level pixel x0 / downsample (sub-pixel when not integral).
        x0, y0 = round(col * downsample), round(row * downsample)
        try:
            image = self._osr.read_region((x0, y0), level, (width, height))
        except Exception as exc:
            raise SlideFormatError(
                f"{self._path}: OpenSlide failed to read level {level} ({col}, {row}) "
                f"{width} x {height}: {exc}"
            ) from exc
        rgba = np.asarray(image)
        rgb = rgba[..., :3]
        if level < len(self._ycbcr) and self._ycbcr[level]:
            return ycbcr_to_rgb(rgb)
        return np.ascontiguousarray(rgb)

    def _close(self) -> None:
        if self._osr is not None:
            self._osr.close()
            self._osr = None
        self._pixels = None


def _fallback_pixels(info: SlideInfo, cause: Exception) -> npt.NDArray[np.uint8]:
    path = info.path
    if not info.level_count:
        raise SlideFormatError(
            f"{path}: OpenSlide cannot open this {info.format} file: {cause}"
        ) from cause
    (w, h), levels = info.level_dimensions[0], info.level_count
    why = (
        "OpenSlide's TIFF parser does not read big-endian classic TIFF"
        if info.big_endian_classic
        else f"OpenSlide does not recognise the file ({cause})"
    )
    if levels > 1 or w * h > FALLBACK_MAX_PIXELS:
        raise SlideFormatError(
            f"{path}: {why}; use reader='cucim' "
            f"(the in-memory fallback takes single-level images up to {FALLBACK_MAX_PIXELS} px)"
        ) from cause
    import tifffile

    log.info("%s: %s; decoding its single %d x %d level through tifffile", path, why, w, h)
    try:
        pixels = tifffile.imread(path, key=0)
    except Exception as exc:
        raise SlideFormatError(f"{path}: cannot decode level 0: {exc}") from exc
    if pixels.shape[:2] != (h, w) or pixels.ndim != 3 or pixels.dtype != np.uint8:
        raise SlideFormatError(f"{path}: level 0 decodes to {pixels.shape} {pixels.dtype}")
    return np.ascontiguousarray(pixels[..., :3])


def _mpp(properties: Any, info: SlideInfo) -> tuple[tuple[float, float] | None, str | None]:
    try:
        mpp = float(properties["openslide.mpp-x"]), float(properties["openslide.mpp-y"])
    except (KeyError, ValueError):
        return info.mpp, info.mpp_source
    if info.mpp is not None and np.allclose(mpp, info.mpp, rtol=1e-9, atol=0):
        return info.mpp, info.mpp_source
    return plausible(mpp), "OpenSlide (openslide.mpp-x/y)"
