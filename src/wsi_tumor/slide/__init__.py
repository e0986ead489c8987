"""Whole-slide readers (cuCIM default, OpenSlide fallback), an in-memory slide, tissue mask.

Importing this package is cheap: cuCIM, OpenSlide and scikit-image are imported when a
slide is first opened or a mask first computed.

Example::

    from wsi_tumor.slide import open_slide, tissue_mask

    with open_slide("tumor_001.tif", require_pyramid=True) as slide:
        patch = slide.read_region((x, y), (224, 224), level=0)
        mask = tissue_mask(slide)  # (rows, cols) bool at MASK_LEVEL
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from wsi_tumor.errors import ConfigError
from wsi_tumor.slide.base import FILL_VALUE, SlideReader
from wsi_tumor.slide.tissue import mask_shape, save_mask_png, tissue_mask
from wsi_tumor.slide.validate import SlideInfo, inspect_slide
from wsi_tumor.slide.virtual import VirtualSlide

log = logging.getLogger(__name__)

ReaderName = Literal["cucim", "openslide"]
READERS: tuple[ReaderName, ...] = ("cucim", "openslide")
"""Reader backends :func:`open_slide` accepts, the default first."""
SLIDE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".svs", ".ndpi")
"""File endings of the TIFF-family slides the readers open (CAMELYON16 ships .tif)."""

__all__ = [
    "FILL_VALUE",
    "READERS",
    "SLIDE_SUFFIXES",
    "ReaderName",
    "SlideInfo",
    "SlideReader",
    "VirtualSlide",
    "inspect_slide",
    "mask_shape",
    "open_slide",
    "save_mask_png",
    "tissue_mask",
]


def open_slide(
    path: str | Path, reader: str = "cucim", *, require_pyramid: bool = False
) -> SlideReader:
    """Check a slide file and open it with the chosen backend.

    Args:
        path: A tiled (pyramidal) TIFF-family slide.
        reader: ``"cucim"`` (default) or ``"openslide"``.
        require_pyramid: Refuse slides with a single resolution level.

    Returns:
        An open reader; use it as a context manager or call ``close()``.

    Raises:
        ConfigError: ``reader`` is not one of :data:`READERS`.
        SlideNotFoundError: The file does not exist.
        SlideFormatError: Not a TIFF-family slide, truncated, or unreadable.
        NotPyramidalError: ``require_pyramid`` and the slide has one level.
        ReaderUnavailableError: The backend's package is not installed.
    """
    if reader not in READERS:
        raise ConfigError(f"unknown slide reader {reader!r}; choose one of {', '.join(READERS)}")
    info = inspect_slide(path, require_pyramid=require_pyramid)
    if reader == "cucim":
        from wsi_tumor.slide.cucim_reader import CuCIMSlide

        slide: SlideReader = CuCIMSlide(info)
    else:
        from wsi_tumor.slide.openslide_reader import OpenSlideSlide

        slide = OpenSlideSlide(info)
    log.debug("opened %r with %s", slide, reader)
    return slide
