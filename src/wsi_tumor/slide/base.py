"""The slide reader protocol every backend implements.

Locations are level-0 (x, y); sizes are (w, h) at the requested level; pixels come back as
(h, w, 3) uint8 RGB. Pixels outside the slide are filled with ``FILL_VALUE`` (white glass),
identically in every backend, so a patch centred near the border reads the same everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FILL_VALUE = 255
"""Value of RGB pixels requested outside the slide."""


@runtime_checkable
class SlideReader(Protocol):
    """A whole-slide image opened for reading; thread-safe ``read_region``."""

    @property
    def path(self) -> Path:
        """File the slide was opened from (an in-memory slide names a pseudo path)."""
        ...

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        ...

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(w, h) of each level, level 0 first."""
        ...

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of each level relative to level 0."""
        ...

    @property
    def mpp(self) -> tuple[float, float]:
        """Level-0 microns per pixel (x, y); raises MissingResolutionError without tags."""
        ...

    def read_region(
        self, location: tuple[int, int], size: tuple[int, int], level: int = 0
    ) -> npt.NDArray[np.uint8]:
        """Read (h, w, 3) uint8 RGB at ``level`` whose top-left is level-0 ``location``.

        The level-0 (x, y) maps to level pixel (floor(x / downsample), floor(y / downsample)).
        """
        ...

    def close(self) -> None:
        """Release the file handle."""
        ...

    def __enter__(self) -> SlideReader: ...

    def __exit__(self, *exc: object) -> None: ...
