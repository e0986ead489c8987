"""Level-0 microns per pixel from a TIFF's own metadata, whichever way the scanner wrote it.

Sources, most specific first:

- Aperio SVS: ``MPP = 0.4990`` in the ImageDescription (cuCIM does not parse it; its
  ``spacing()`` says 1.0 with no unit);
- OME-TIFF: ``PhysicalSizeX`` / ``PhysicalSizeY`` of the first ``Pixels`` element of the
  OME-XML, in ``PhysicalSizeXUnit`` (micrometres by default);
- the TIFF resolution tags (XResolution / YResolution with ResolutionUnit centimetre or
  inch), which generic pyramidal TIFFs such as CAMELYON16's carry.

A value that is missing, zero, negative or absurd (outside 0.01 - 100 um/px) is no value:
the caller then stops with MissingResolutionError unless the user gives ``--mpp``.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from xml.etree import ElementTree

log = logging.getLogger(__name__)

MPP_RANGE = (0.01, 100.0)
"""Plausible microns per pixel of a slide scan; anything else is treated as missing."""
_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)")
_UNIT_MICRONS = {
    "µm": 1.0, "um": 1.0, "micron": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "m": 1e6,
}  # fmt: skip

Mpp = tuple[float, float]


def plausible(mpp: Mpp | None) -> Mpp | None:
    """``mpp`` when both values lie in :data:`MPP_RANGE`, else None."""
    if mpp is None:
        return None
    low, high = MPP_RANGE
    return mpp if all(low <= value <= high for value in mpp) else None


def aperio_mpp(description: str) -> Mpp | None:
    """``MPP = x`` of an Aperio ImageDescription (square pixels)."""
    match = _APERIO_MPP.search(description)
    if match is None:
        return None
    try:
        value = float(match.group(1))
    except ValueError:
        return None
    return plausible((value, value))


def ome_mpp(ome_xml: str) -> Mpp | None:
    """PhysicalSizeX / PhysicalSizeY of the first image of an OME-XML document, in um."""
    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError as exc:
        log.debug("OME-XML does not parse: %s", exc)
        return None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    values = []
    for axis in ("X", "Y"):
        size = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        factor = _UNIT_MICRONS.get(unit.strip().lower() if unit != "µm" else unit)
        if size is None or factor is None:
            return None
        try:
            values.append(float(size) * factor)
        except ValueError:
            return None
    return plausible((values[0], values[1]))


def resolution_tags_mpp(page: Any) -> Mpp | None:
    """Microns per pixel from XResolution / YResolution / ResolutionUnit of a tifffile page."""
    tags = page.tags
    unit_tag = tags.get("ResolutionUnit")
    xres_tag, yres_tag = tags.get("XResolution"), tags.get("YResolution")
    if unit_tag is None or xres_tag is None or yres_tag is None:
        return None
    microns = {2: 25_400.0, 3: 10_000.0}.get(int(unit_tag.value))
    if microns is None:
        return None
    values = []
    for tag in (xres_tag, yres_tag):
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        if not num or not den:
            return None
        values.append(microns * den / num)
    return plausible((values[0], values[1]))


def tiff_mpp(tif: Any) -> tuple[Mpp | None, str | None]:
    """Level-0 (x, y) microns per pixel of an open ``tifffile.TiffFile`` and where it came from.

    Returns:
        ``(mpp, source)``; ``(None, None)`` when the file says nothing usable.
    """
    first = tif.pages[0]
    description = str(getattr(first, "description", "") or "")
    if getattr(tif, "is_svs", False):
        mpp = aperio_mpp(description)
        if mpp is not None:
            return mpp, "Aperio ImageDescription (MPP)"
    if getattr(tif, "is_ome", False):
        mpp = ome_mpp(str(tif.ome_metadata or description))
        if mpp is not None:
            return mpp, "OME-XML (PhysicalSizeX/Y)"
    mpp = resolution_tags_mpp(first)
    if mpp is not None:
        return mpp, "TIFF resolution tags"
    return None, None
