"""The slide as the network must see it: at the model's microns per pixel.

A network trained on CAMELYON16 (0.243 um/px) sees tissue at half size on a 20x scan
(0.5 um/px). :func:`at_model_resolution` returns a reader whose level 0 is at the model's
resolution: it picks the coarsest pyramid level at or finer than the model's resolution
(within :data:`~wsi_tumor.contract.MPP_TOLERANCE`) and, when that level's resolution still
differs by more than the tolerance, resamples each region it reads (antialiased Lanczos,
one PIL call, with the source box placed to the sub-pixel). Slides within the tolerance
(CAMELYON16's 0.243 and 0.226 um/px scanners) are returned untouched, so MONAI's patch
locations and pixels stay exact on them.

The view's coordinates are model pixels; :attr:`Resolution.slide_px_per_view_px` converts
them back to the slide's own level-0 pixels (lesion candidates are reported in those).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.errors import ConfigError, MissingResolutionError
from wsi_tumor.slide.base import SlideReader

log = logging.getLogger(__name__)

_MARGIN = 2
"""Source pixels read around a resampled region, so the filter has its neighbours."""


@dataclass(frozen=True)
class Resolution:
    """How a slide is read at the model's resolution.

    Attributes:
        slide_mpp: Level-0 microns per pixel of the slide (x, y).
        mpp_source: Where ``slide_mpp`` came from (file metadata kind, or ``--mpp``).
        model_mpp: Microns per pixel the network expects.
        level: The pyramid level regions are read from.
        level_mpp: That level's microns per pixel (x).
        resampled: Regions are resampled (the level is not within the tolerance).
        slide_px_per_view_px: Slide level-0 pixels per model (view) pixel.
    """

    slide_mpp: tuple[float, float]
    mpp_source: str
    model_mpp: float
    level: int
    level_mpp: float
    resampled: bool
    slide_px_per_view_px: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready values (for the slide's report)."""
        data = asdict(self)
        data["slide_mpp"] = list(self.slide_mpp)
        return data


def slide_mpp(slide: SlideReader, override: float | None) -> tuple[tuple[float, float], str]:
    """The slide's level-0 (x, y) um/px: ``override`` (``--mpp``) or the file's own.

    Raises:
        MissingResolutionError: the file states none and no override is given.
        ConfigError: ``override`` is not a plausible positive value.
    """
    if override is not None:
        if not 0.01 <= override <= 100.0:
            raise ConfigError(f"--mpp must be in [0.01, 100] um/px, got {override}")
        return (override, override), "--mpp"
    try:
        mpp = slide.mpp
    except MissingResolutionError:
        raise MissingResolutionError(
            f"{slide.path}: the file states no resolution (microns per pixel); pass --mpp "
            f"(e.g. --mpp 0.25 for a 40x scan, 0.5 for 20x) so it can be read at the "
            f"model's {contract.MODEL_MPP} um/px"
        ) from None
    return mpp, slide.mpp_source or "file"


def plan_resolution(
    slide: SlideReader,
    model_mpp: float = contract.MODEL_MPP,
    override: float | None = None,
    tolerance: float = contract.MPP_TOLERANCE,
) -> Resolution:
    """Choose the level to read and whether to resample (see the module docstring)."""
    mpp, source = slide_mpp(slide, override)
    if abs(mpp[0] - mpp[1]) > 0.01 * max(mpp):
        log.warning("%s: non-square pixels %s um; using x", slide.path, mpp)
    base = mpp[0]
    level_mpps = [base * d for d in slide.level_downsamples]
    fine_enough = [i for i, m in enumerate(level_mpps) if m <= model_mpp * (1 + tolerance)]
    level = max(fine_enough, key=lambda i: level_mpps[i]) if fine_enough else 0
    level_mpp = level_mpps[level]
    resampled = abs(level_mpp / model_mpp - 1.0) > tolerance
    per_view = model_mpp / base if resampled else slide.level_downsamples[level]
    return Resolution(mpp, source, model_mpp, level, level_mpp, resampled, per_view)


class ModelResolutionView(SlideReader):
    """A slide re-indexed (and, where needed, resampled) to the model's resolution.

    Level 0 of the view is the slide's level ``resolution.level``, resampled to the model's
    microns per pixel when ``resolution.resampled``; the view's coarser levels are the
    slide's own levels from that one on, as they are (only their downsamples are relative
    to the view), which is what the tissue mask and the heatmap read: they never pay for
    resampling a whole level.

    Args:
        slide: The open slide (closed with the view).
        resolution: From :func:`plan_resolution`.
    """

    def __init__(self, slide: SlideReader, resolution: Resolution) -> None:
        self.source = slide
        self.resolution = resolution
        scale = resolution.slide_px_per_view_px
        self._levels = list(range(resolution.level, slide.level_count))
        dims = [slide.level_dimensions[i] for i in self._levels]
        downsamples = [slide.level_downsamples[i] / scale for i in self._levels]
        if resolution.resampled:  # level 0: the resampled one; then the slide's as they are
            width0, height0 = slide.level_dimensions[0]
            self._levels.insert(0, resolution.level)
            dims.insert(0, (math.ceil(width0 / scale), math.ceil(height0 / scale)))
            downsamples.insert(0, 1.0)
        super().__init__(
            slide.path,
            tuple(dims),
            tuple(downsamples),
            (resolution.model_mpp, resolution.model_mpp),
            f"{resolution.mpp_source}, read at the model's resolution",
            slide.slide_format,
        )
        self.reader_name = slide.reader_name
        self.fallback_from = slide.fallback_from

    def damage(self, location: tuple[int, int], size: tuple[int, int], level: int = 0) -> list[str]:
        """Damage under the source pixels a read of the same arguments uses."""
        view_down = self._downsamples[level]
        col, row = math.floor(location[0] / view_down), math.floor(location[1] / view_down)
        source_level = self._levels[level]
        if level > 0 or not self.resolution.resampled:
            down = self.source.level_downsamples[source_level]
            return self.source.damage(_level0(col, row, down), size, source_level)
        down = self.source.level_downsamples[source_level]
        per_source = self.resolution.slide_px_per_view_px / down
        left, top = math.floor(col * per_source), math.floor(row * per_source)
        right = math.ceil((col + size[0]) * per_source)
        bottom = math.ceil((row + size[1]) * per_source)
        return self.source.damage(
            _level0(left, top, down), (right - left, bottom - top), source_level
        )

    def to_slide(self, xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """View (model) pixel coordinates -> the slide's level-0 pixel coordinates."""
        return np.asarray(xy, np.float64) * self.resolution.slide_px_per_view_px

    def _read_level(
        self, level: int, col: int, row: int, width: int, height: int
    ) -> npt.NDArray[np.uint8]:
        source_level = self._levels[level]
        if level > 0 or not self.resolution.resampled:  # the view's pixels are the level's
            location = _level0(col, row, self.source.level_downsamples[source_level])
            return self.source.read_region(location, (width, height), source_level)
        return self._resampled(col, row, width, height)

    def _resampled(self, col: int, row: int, width: int, height: int) -> npt.NDArray[np.uint8]:
        """View level-0 pixels [col, col + width) x [row, row + height), resampled."""
        from PIL import Image

        level = self.resolution.level
        down = self.source.level_downsamples[level]
        per_source = self.resolution.slide_px_per_view_px / down  # source px per view px
        x0, y0 = col * per_source, row * per_source
        x1, y1 = (col + width) * per_source, (row + height) * per_source
        left, top = math.floor(x0) - _MARGIN, math.floor(y0) - _MARGIN
        right, bottom = math.ceil(x1) + _MARGIN, math.ceil(y1) + _MARGIN
        window = self.source.read_region(
            _level0(left, top, down), (right - left, bottom - top), level
        )
        box = (x0 - left, y0 - top, x1 - left, y1 - top)
        image = Image.fromarray(window).resize((width, height), Image.Resampling.LANCZOS, box=box)
        return np.asarray(image, dtype=np.uint8)

    def _close(self) -> None:
        self.source.close()


def _level0(col: int, row: int, downsample: float) -> tuple[int, int]:
    """A level-0 location that maps back to level pixel (col, row) (floor(x / downsample)),
    also for non-integral downsamples."""
    return math.ceil(col * downsample), math.ceil(row * downsample)


def at_model_resolution(
    slide: SlideReader,
    model_mpp: float = contract.MODEL_MPP,
    override: float | None = None,
    tolerance: float = contract.MPP_TOLERANCE,
) -> tuple[SlideReader, Resolution]:
    """The slide as the network must see it, and how it is read.

    Returns the slide itself when its level 0 is within the tolerance (nothing changes:
    MONAI's exact path); otherwise a :class:`ModelResolutionView`.

    Raises:
        MissingResolutionError: the file states no resolution and no ``override`` is given.
    """
    resolution = plan_resolution(slide, model_mpp, override, tolerance)
    if resolution.level == 0 and not resolution.resampled:
        return slide, resolution
    log.info(
        "%s: %.3f um/px, read from level %d (%.3f um/px)%s at the model's %.3f um/px",
        slide.path,
        resolution.slide_mpp[0],
        resolution.level,
        resolution.level_mpp,
        ", resampled" if resolution.resampled else "",
        model_mpp,
    )
    return ModelResolutionView(slide, resolution), resolution
