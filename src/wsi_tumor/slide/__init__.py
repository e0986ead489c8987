"""Whole-slide readers (cuCIM, OpenSlide, tiffslide, torchvision), an in-memory slide, tissue
mask, and the view of a slide at the model's resolution.

Importing this package is cheap: cuCIM, OpenSlide, tiffslide, torch and scikit-image are
imported when a slide is first opened or a mask first computed.

Example::

    from wsi_tumor.slide import open_slide, tissue_mask

    with open_slide("tumor_001.tif") as slide:          # reader picked per format
        patch = slide.read_region((x, y), (224, 224), level=0)
        mask = tissue_mask(slide)  # (rows, cols) bool at MASK_LEVEL
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from wsi_tumor.errors import ConfigError, ReaderUnavailableError, SlideFormatError
from wsi_tumor.slide.base import FILL_VALUE, SlideReader
from wsi_tumor.slide.formats import (
    GPU_READERS,
    READER_CHOICES,
    READERS,
    SLIDE_SUFFIXES,
    ReaderName,
    reader_order,
)
from wsi_tumor.slide.tissue import mask_shape, save_mask_png, tissue_mask
from wsi_tumor.slide.validate import SlideInfo, inspect_slide
from wsi_tumor.slide.virtual import VirtualSlide

log = logging.getLogger(__name__)

_BACKENDS: dict[str, tuple[str, str]] = {
    "cucim": ("wsi_tumor.slide.cucim_reader", "CuCIMSlide"),
    "openslide": ("wsi_tumor.slide.openslide_reader", "OpenSlideSlide"),
    "tiffslide": ("wsi_tumor.slide.tiffslide_reader", "TiffSlideSlide"),
    "torchvision": ("wsi_tumor.slide.torchvision_reader", "TorchvisionSlide"),
    "nvjpeg": ("wsi_tumor.slide.torchvision_reader", "NvjpegSlide"),
}

__all__ = [
    "FILL_VALUE",
    "GPU_READERS",
    "READERS",
    "READER_CHOICES",
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
    path: str | Path, reader: str = "auto", *, require_pyramid: bool = False
) -> SlideReader:
    """Check a slide file and open it with the chosen backend.

    Args:
        path: A slide file (any format of :mod:`wsi_tumor.slide.formats`) or a DICOM
            WSI folder.
        reader: ``"auto"`` (default: the best backend for the format, falling back to the
            next when it cannot open the file), or a backend of :data:`READERS`.
        require_pyramid: Refuse TIFF slides with a single resolution level.

    Returns:
        An open reader; use it as a context manager or call ``close()``. Its
        ``describe()`` says which backend opened it and which failed first.

    Raises:
        ConfigError: ``reader`` is not one of :data:`READER_CHOICES`.
        SlideNotFoundError: The file does not exist.
        SlideFormatError: Not a whole-slide image, truncated, or unreadable by any reader.
        NotPyramidalError: ``require_pyramid`` and the slide has one level.
        ReaderUnavailableError: The requested backend's package is not installed.
    """
    if reader not in READER_CHOICES:
        raise ConfigError(
            f"unknown slide reader {reader!r}; choose one of {', '.join(READER_CHOICES)}"
        )
    info = inspect_slide(path, require_pyramid=require_pyramid)
    order = reader_order(info.format, info.subifd_pyramid) if reader == "auto" else [reader]
    failures: list[str] = []
    for name in order[:-1]:
        try:
            return _open_with(name, info, failures)
        except (SlideFormatError, ReaderUnavailableError) as exc:
            log.info("%s: %s cannot open it (%s); trying the next reader", info.source, name, exc)
            failures.append(f"{name}: {str(exc).removeprefix(f'{info.path}: ')}")
    try:
        return _open_with(order[-1], info, failures)
    except SlideFormatError as exc:
        if failures:
            raise SlideFormatError(f"{exc} (tried first: {'; '.join(failures)})") from exc
        raise


def _open_with(name: str, info: SlideInfo, failures: list[str]) -> SlideReader:
    module, cls = _BACKENDS[name]
    slide: SlideReader = getattr(importlib.import_module(module), cls)(info)
    slide.fallback_from = tuple(failures)
    log.debug("opened %r with %s (%s)", slide, name, info.format)
    return slide
