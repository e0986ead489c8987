"""An in-memory slide over a numpy image, for fast logic tests."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsi_tumor.slide.base import SlideReader
from wsi_tumor.slide.image import halve

log = logging.getLogger(__name__)

DEFAULT_TOP_SIDE = 256
"""Without ``levels``, halve until the longer side of the top level is at most this."""


class VirtualSlide(SlideReader):
    """A :class:`~wsi_tumor.slide.base.SlideReader` over an (H, W, 3) uint8 array.

    Level k is level k-1 halved by :func:`halve`, so level dimensions are
    ceil(W / 2**k) x ceil(H / 2**k) and downsamples are exactly 2**k.

    Args:
        image: Level 0, (H, W, 3) uint8 RGB (copied).
        mpp: Level-0 microns per pixel, one value or (x, y); None means no resolution
            tags (``mpp`` then raises MissingResolutionError).
        levels: Number of levels; None halves until the longer side is at most
            :data:`DEFAULT_TOP_SIDE`.
        name: Pseudo path reported by ``path`` and in error messages.

    Raises:
        ValueError: ``image`` is not (H, W, 3) uint8 or ``levels`` < 1.
    """

    def __init__(
        self,
        image: npt.NDArray[np.uint8],
        mpp: float | tuple[float, float] | None = None,
        levels: int | None = None,
        name: str = "virtual-slide",
    ) -> None:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or 0 in array.shape:
            raise ValueError(
                f"{name}: image must be (H, W, 3) uint8, got {array.shape} {array.dtype}"
            )
        if levels is not None and levels < 1:
            raise ValueError(f"{name}: levels must be >= 1, got {levels}")
        pyramid = [np.ascontiguousarray(array).copy()]
        while (
            (len(pyramid) < levels)
            if levels is not None
            else (max(pyramid[-1].shape[:2]) > DEFAULT_TOP_SIDE)
        ):
            pyramid.append(halve(pyramid[-1]))
        for level in pyramid:
            level.setflags(write=False)
        self._pyramid = pyramid
        pair = None if mpp is None else (mpp, mpp) if isinstance(mpp, int | float) else mpp
        dims = tuple((int(p.shape[1]), int(p.shape[0])) for p in pyramid)
        super().__init__(
            Path(name),
            dims,
            tuple(float(2**k) for k in range(len(pyramid))),
            None if pair is None else (float(pair[0]), float(pair[1])),
        )

    def _read_level(
        self, level: int, col: int, row: int, width: int, height: int
    ) -> npt.NDArray[np.uint8]:
        return self._pyramid[level][row : row + height, col : col + width].copy()

    def _close(self) -> None:
        self._pyramid = []
