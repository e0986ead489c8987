"""The one slide reader type: argument checks, clipping to the slide, padding.

Locations are level-0 (x, y); sizes are (w, h) at the requested level; pixels come back as
(h, w, 3) uint8 RGB. Pixels outside the slide are ``FILL_VALUE`` (white glass) in every
backend, so a patch centred near the border reads the same everywhere.

Every backend subclasses :class:`SlideReader` and implements only ``_read_level`` (pixels of
a rectangle that lies fully inside one level, in that level's own pixel coordinates). The
base class turns a level-0 ``location`` into level coordinates the same way for every
backend (``col = floor(x / downsample)``, as cuCIM does), reads the part inside the slide
and pads the rest with ``FILL_VALUE``, so all backends return the same array for the same
request.
"""

from __future__ import annotations

import logging
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsi_tumor.errors import MissingResolutionError, SlideError
from wsi_tumor.slide.damage import DamageChecker

log = logging.getLogger(__name__)

Dimensions = tuple[tuple[int, int], ...]
FILL_VALUE = 255
"""Value of RGB pixels requested outside the slide."""


def _as_int_pair(value: Sequence[object], name: str) -> tuple[int, int]:
    if len(value) != 2 or not all(isinstance(v, numbers.Integral) for v in value):
        raise TypeError(f"{name} must be two integers, got {value!r}")
    first, second = value
    return int(first), int(second)  # type: ignore[call-overload]


class SlideReader(ABC):
    """A whole-slide image opened for reading; ``read_region`` is thread-safe.

    Every backend subclasses it and implements only ``_read_level`` and ``_close``.

    Args:
        path: File the slide was opened from (or a pseudo path).
        level_dimensions: (w, h) of each level, level 0 first.
        level_downsamples: Downsample of each level relative to level 0.
        mpp: Level-0 microns per pixel (x, y), or None when the slide has no resolution.
        mpp_source: Where ``mpp`` came from (for reports).
        slide_format: The file's format (``aperio``, ``generic-tiff``, ...).
    """

    reader_name = "virtual"
    """The backend's name, as ``--reader`` spells it."""

    def __init__(
        self,
        path: Path,
        level_dimensions: Dimensions,
        level_downsamples: tuple[float, ...],
        mpp: tuple[float, float] | None,
        mpp_source: str | None = None,
        slide_format: str = "in-memory",
    ) -> None:
        self._path = Path(path)
        self._dimensions = tuple((int(w), int(h)) for w, h in level_dimensions)
        self._downsamples = tuple(float(d) for d in level_downsamples)
        self._mpp = mpp
        self._mpp_source = mpp_source if mpp is not None else None
        self.slide_format = slide_format
        self.fallback_from: tuple[str, ...] = ()
        """Readers ``auto`` tried first and that could not open the file, with why."""
        self.damage_checker: DamageChecker | None = None
        """Checks the file's tiles for damage (TIFF formats the pre-flight reads)."""
        self._closed = False

    # --- protocol properties ------------------------------------------------------------
    @property
    def path(self) -> Path:
        """File the slide was opened from (an in-memory slide names a pseudo path)."""
        return self._path

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self._dimensions)

    @property
    def level_dimensions(self) -> Dimensions:
        """(w, h) of each level, level 0 first."""
        return self._dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of each level relative to level 0."""
        return self._downsamples

    @property
    def mpp(self) -> tuple[float, float]:
        """Level-0 microns per pixel (x, y).

        Raises:
            MissingResolutionError: The slide has no resolution tags.
        """
        if self._mpp is None:
            raise MissingResolutionError(
                f"{self._path}: the slide file states no resolution (microns per pixel); "
                "give it with --mpp"
            )
        return self._mpp

    @property
    def mpp_source(self) -> str | None:
        """Where :attr:`mpp` came from (file metadata kind), None without one."""
        return self._mpp_source

    def describe(self) -> dict[str, object]:
        """Reader, format, resolution source and fallbacks, for a slide's JSON report."""
        return {
            "reader": self.reader_name,
            "format": self.slide_format,
            "mpp_source": self._mpp_source,
            "fallback_from": list(self.fallback_from),
        }

    # --- reading ------------------------------------------------------------------------
    def damage(self, location: tuple[int, int], size: tuple[int, int], level: int = 0) -> list[str]:
        """What is wrong with the tiles a :meth:`read_region` of the same arguments decodes.

        Empty when nothing is (or the format's tiles are not checked): see
        :mod:`wsi_tumor.slide.damage`.
        """
        if self.damage_checker is None:
            return []
        downsample = self._downsamples[level]
        col, row = math.floor(location[0] / downsample), math.floor(location[1] / downsample)
        return self.damage_checker.problems(level, col, row, size[0], size[1])

    def read_region(
        self, location: tuple[int, int], size: tuple[int, int], level: int = 0
    ) -> npt.NDArray[np.uint8]:
        """Read (h, w, 3) uint8 RGB at ``level`` whose top-left is level-0 ``location``.

        Pixels outside the slide (negative locations included) are ``FILL_VALUE``. The
        level-0 location maps to level column ``floor(x / downsample)`` (row likewise).

        Args:
            location: Level-0 (x, y) of the top-left pixel.
            size: (w, h) of the region in pixels of ``level``.
            level: Pyramid level to read.

        Returns:
            A C-contiguous (h, w, 3) uint8 array owned by the caller.

        Raises:
            TypeError: ``location`` or ``size`` are not integer pairs.
            ValueError: ``level`` is out of range or ``size`` is not positive.
            SlideError: The slide is closed.
            SlideFormatError: The backend cannot decode the requested tiles.
        """
        x, y = _as_int_pair(location, "location")
        width, height = _as_int_pair(size, "size")
        if not isinstance(level, numbers.Integral) or not 0 <= int(level) < self.level_count:
            raise ValueError(
                f"{self._path}: level {level!r} out of range (slide has {self.level_count})"
            )
        level = int(level)
        if width <= 0 or height <= 0:
            raise ValueError(f"{self._path}: region size must be positive, got {size!r}")
        if self._closed:
            raise SlideError(f"{self._path}: read_region on a closed slide")
        downsample = self._downsamples[level]
        col = math.floor(x / downsample)
        row = math.floor(y / downsample)
        level_w, level_h = self._dimensions[level]
        c0, r0 = max(col, 0), max(row, 0)
        c1, r1 = min(col + width, level_w), min(row + height, level_h)
        if (c0, r0, c1, r1) == (col, row, col + width, row + height):
            return self._checked(self._read_level(level, col, row, width, height), width, height)
        out = np.full((height, width, 3), FILL_VALUE, np.uint8)
        if c1 > c0 and r1 > r0:
            inside = self._checked(
                self._read_level(level, c0, r0, c1 - c0, r1 - r0), c1 - c0, r1 - r0
            )
            out[r0 - row : r1 - row, c0 - col : c1 - col] = inside
        return out

    def _checked(
        self, pixels: npt.NDArray[np.uint8], width: int, height: int
    ) -> npt.NDArray[np.uint8]:
        if pixels.shape != (height, width, 3) or pixels.dtype != np.uint8:
            raise SlideError(
                f"{self._path}: backend returned {pixels.shape} {pixels.dtype}, "
                f"expected ({height}, {width}, 3) uint8"
            )
        return np.ascontiguousarray(pixels)

    @abstractmethod
    def _read_level(
        self, level: int, col: int, row: int, width: int, height: int
    ) -> npt.NDArray[np.uint8]:
        """Pixels (height, width, 3) of a rectangle fully inside ``level``, level coordinates."""

    # --- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Release the file handle; later reads raise SlideError. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._close()

    @abstractmethod
    def _close(self) -> None:
        """Backend hook: release native resources."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self._dimensions[0]
        return (
            f"{type(self).__name__}({str(self._path)!r}, {w} x {h} px, {self.level_count} levels)"
        )
