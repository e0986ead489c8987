"""Pre-flight check every slide goes through before a backend opens it.

It reads only the file's structure (for TIFF-family files: tifffile plus a raw walk of the
IFD chain and the first bytes of one tile per level), never pixel data, so it costs
milliseconds even on a gigapixel slide. It turns the ways a file can be unusable into typed
errors whose message names the file and the problem, and it records facts the backends need:

- the format (:mod:`wsi_tumor.slide.formats`), which decides the reader ``auto`` picks;
- for the TIFF formats the pre-flight reads itself (generic TIFF, Aperio, OME-TIFF,
  Philips), the pyramid levels: level 0 plus the tiled pages of the main IFD chain that
  are reduced copies of it (same aspect ratio, smaller), so label, macro and thumbnail
  images are never taken for tissue; a pyramid stored in SubIFDs (OME-TIFF's layout),
  which only the tiffslide backend reads, is recorded as such;
- level-0 microns per pixel and where they come from (:mod:`wsi_tumor.slide.metadata`);
- levels whose JPEG tiles are YCbCr (JFIF) although the TIFF says Photometric=RGB:
  cuCIM and OpenSlide follow the tag and return raw Y/Cb/Cr samples, so the readers
  convert them (the real H&E sample, a Bio-Formats export, is such a file);
- byte order: OpenSlide's TIFF parser cannot read big-endian classic TIFF.

A TIFF that declares absurd sizes (a decompression bomb: a side above
:data:`MAX_SIDE_PX`, more than :data:`MAX_PIXELS` pixels, or a tile table that does not
match the declared size) is refused here, before any reader allocates anything. Vendor
formats that are not plain pyramidal TIFFs (NDPI, MRXS, SCN, BIF, VMS, DICOM) are checked
for existence and magic only; OpenSlide describes their levels.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from wsi_tumor.errors import NotPyramidalError, SlideFormatError, SlideNotFoundError
from wsi_tumor.slide.damage import TileTable
from wsi_tumor.slide.formats import (
    TIFF_FORMATS,
    dicom_files,
    format_from_suffix,
    is_dicom_file,
    tiff_format,
)
from wsi_tumor.slide.metadata import Mpp, tiff_mpp

log = logging.getLogger(__name__)

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_OTHER_FORMATS = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive",
}
_JPEG = 7
_PHOTOMETRIC_RGB = 2
_REDUCED_IMAGE = 1
_MAX_IFDS = 100_000
_ASPECT_TOLERANCE = 0.02
MAX_SIDE_PX = 500_000
"""Longest side a slide may declare (the largest scanners write about 250,000 px)."""
MAX_PIXELS = 1 << 36
"""Most level-0 pixels a slide may declare (about 69 Gpx; CAMELYON16's largest: 22 Gpx)."""


@dataclass(frozen=True)
class SlideInfo:
    """What the pre-flight learned about a slide.

    Attributes:
        path: The file a reader opens (for a DICOM folder: one of its ``.dcm`` files).
        source: The path the user gave (a file, or a DICOM folder).
        format: ``generic-tiff``, ``aperio``, ``ome-tiff``, ``philips``, ``hamamatsu``,
            ``mirax``, ``leica``, ``ventana``, ``dicom``, ... (see :mod:`.formats`).
        level_dimensions: (w, h) of each level the pre-flight found, level 0 first; empty
            when the format's levels are left to OpenSlide.
        mpp: Level-0 microns per pixel (x, y) from the file's metadata, or None.
        mpp_source: Where ``mpp`` came from.
        ycbcr_levels: Per level, True when its JPEG tiles hold YCbCr under Photometric=RGB.
        big_endian_classic: Classic (non-Big) TIFF in big-endian byte order.
        subifd_levels: Reduced-resolution images stored in level 0's SubIFDs.
        tile_tables: Per level, where its tiles are (for :mod:`.damage` checks).
    """

    path: Path
    source: Path
    format: str
    level_dimensions: tuple[tuple[int, int], ...] = ()
    mpp: Mpp | None = None
    mpp_source: str | None = None
    ycbcr_levels: tuple[bool, ...] = ()
    big_endian_classic: bool = False
    subifd_levels: int = 0
    tile_tables: tuple[TileTable | None, ...] = ()

    @property
    def level_count(self) -> int:
        """Number of levels the pre-flight found (0: left to the reader)."""
        return len(self.level_dimensions)

    @property
    def subifd_pyramid(self) -> bool:
        """The pyramid lives in SubIFDs only (OME-TIFF): only tiffslide sees its levels."""
        return self.subifd_levels > 0 and self.level_count == 1 + self.subifd_levels


def inspect_slide(path: str | Path, require_pyramid: bool = False) -> SlideInfo:
    """Check that ``path`` is a readable whole-slide image and describe it.

    Args:
        path: A slide file, or a folder holding a DICOM WSI.
        require_pyramid: Raise when a TIFF slide has a single resolution level.

    Returns:
        The facts the readers need (see :class:`SlideInfo`).

    Raises:
        SlideNotFoundError: The file does not exist.
        SlideFormatError: Not a whole-slide image, unreadable header, not tiled, truncated,
            not 8-bit RGB, or declaring absurd sizes.
        NotPyramidalError: ``require_pyramid`` and only one level is readable.
    """
    import tifffile

    p = Path(path)
    if not p.exists():
        raise SlideNotFoundError(f"{p}: slide file does not exist")
    if p.is_dir():
        files = dicom_files(p)
        if not files:
            raise SlideFormatError(f"{p}: a folder, but not a DICOM WSI (no DICOM files in it)")
        return SlideInfo(path=max(files, key=lambda f: f.stat().st_size), source=p, format="dicom")
    if not p.is_file():
        raise SlideFormatError(f"{p}: not a regular file")
    file_size = p.stat().st_size
    if file_size < 8:
        raise SlideFormatError(f"{p}: {file_size} bytes is too short for a slide file")
    with p.open("rb") as fh:
        head = fh.read(132)
        if head[:4] not in _TIFF_MAGICS:
            return _non_tiff(p, head)
        _walk_ifd_chain(p, fh, head, file_size)
    try:
        with tifffile.TiffFile(p) as tif:
            fmt = tiff_format(tif)
            if fmt not in TIFF_FORMATS:
                return SlideInfo(path=p, source=p, format=fmt)
            return _describe(p, tif, fmt, file_size, require_pyramid)
    except SlideFormatError:  # NotPyramidalError included
        raise
    except Exception as exc:  # tifffile raises many types on corrupt input
        raise SlideFormatError(f"{p}: unreadable TIFF structure: {exc}") from exc


def trusted_levels(
    path: Path, reader: str, dimensions: list[tuple[int, int]], info: SlideInfo
) -> tuple[tuple[int, int], ...]:
    """The levels a backend may use: the pre-flight's when it found them (the backend must see
    them first, in order; extra levels it reports, e.g. an associated image, are dropped),
    otherwise all the backend's own.

    Raises:
        SlideFormatError: the backend sees other levels than the file has.
    """
    found = tuple((int(w), int(h)) for w, h in dimensions)
    if not info.level_count:
        if not found:
            raise SlideFormatError(f"{path}: {reader} finds no image level")
        return found
    if info.subifd_pyramid and found == info.level_dimensions[: len(found)]:
        log.warning(
            "%s: %s does not read SubIFD levels; only %d level(s)", path, reader, len(found)
        )
        return found
    if found[: info.level_count] != info.level_dimensions:
        raise SlideFormatError(
            f"{path}: {reader} sees levels {found}, the file has {info.level_dimensions}"
        )
    return info.level_dimensions


def _non_tiff(path: Path, head: bytes) -> SlideInfo:
    """A file that is not a TIFF: a DICOM or vendor file OpenSlide reads, or an error."""
    if is_dicom_file(head):
        return SlideInfo(path=path, source=path, format="dicom")
    fmt = format_from_suffix(path)
    if fmt is not None and fmt != "dicom":
        return SlideInfo(path=path, source=path, format=fmt)
    for magic, name in _OTHER_FORMATS.items():
        if head.startswith(magic):
            raise SlideFormatError(f"{path}: not a whole-slide image, the file is {name}")
    raise SlideFormatError(
        f"{path}: not a whole-slide image (file starts with {head[:8]!r}: no TIFF header, "
        "no DICOM preamble, no known slide file ending)"
    )


def _walk_ifd_chain(path: Path, fh: BinaryIO, head: bytes, file_size: int) -> None:
    """Follow the main IFD chain and fail if any directory lies beyond the end of the file."""
    endian = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    if big:
        (offset,) = struct.unpack(endian + "Q", head[8:16])
        count_fmt, count_size, entry_size, off_fmt, off_size = "Q", 8, 20, "Q", 8
    else:
        (offset,) = struct.unpack(endian + "I", head[4:8])
        count_fmt, count_size, entry_size, off_fmt, off_size = "H", 2, 12, "I", 4
    seen: set[int] = set()
    index = 0
    while offset:
        if offset in seen or index >= _MAX_IFDS:
            raise SlideFormatError(f"{path}: corrupt TIFF: IFD chain loops at byte {offset}")
        seen.add(offset)
        if offset + count_size > file_size:
            raise SlideFormatError(
                f"{path}: truncated: IFD {index} starts at byte {offset} "
                f"but the file has {file_size} bytes"
            )
        fh.seek(offset)
        (count,) = struct.unpack(endian + count_fmt, fh.read(count_size))
        end = offset + count_size + count * entry_size + off_size
        if end > file_size:
            raise SlideFormatError(
                f"{path}: truncated: IFD {index} ends at byte {end} "
                f"but the file has {file_size} bytes"
            )
        fh.seek(offset + count_size + count * entry_size)
        (offset,) = struct.unpack(endian + off_fmt, fh.read(off_size))
        index += 1
    if index == 0:
        raise SlideFormatError(f"{path}: TIFF header points to no image directory")


def _describe(path: Path, tif: Any, fmt: str, file_size: int, require_pyramid: bool) -> SlideInfo:
    if not tif.pages:
        raise SlideFormatError(f"{path}: TIFF has no image")
    first = tif.pages[0]
    _check_declared_size(path, first)
    if not first.is_tiled:
        raise SlideFormatError(
            f"{path}: level 0 is not tiled (stripped TIFF); whole-slide readers need a tiled TIFF"
        )
    samples = int(first.samplesperpixel)
    if samples not in (3, 4) or first.dtype is None or first.dtype.itemsize != 1:
        raise SlideFormatError(
            f"{path}: level 0 is {samples}-sample {first.dtype}, expected 8-bit RGB"
        )
    subifds = len(first.subifds or ())
    pages = _pyramid_pages(tif, first, subifds)
    with open(path, "rb") as fh:
        for level, page in enumerate(pages):
            _check_tile_extents(path, page, level, file_size)
        ycbcr = tuple(_jpeg_is_ycbcr_under_rgb(page, fh) for page in pages)
    dimensions = tuple((int(page.imagewidth), int(page.imagelength)) for page in pages)
    mpp, mpp_source = tiff_mpp(tif)
    info = SlideInfo(
        path=path,
        source=path,
        format=fmt,
        level_dimensions=dimensions,
        mpp=mpp,
        mpp_source=mpp_source,
        ycbcr_levels=ycbcr,
        big_endian_classic=tif.byteorder == ">" and not tif.is_bigtiff,
        subifd_levels=subifds if len(pages) > 1 else 0,
        tile_tables=tuple(TileTable.of(page) for page in pages),
    )
    if require_pyramid and info.level_count < 2:
        w, h = dimensions[0]
        raise NotPyramidalError(
            f"{path}: single-level image ({w} x {h} px) where a pyramid is needed"
        )
    if any(ycbcr):
        log.info("%s: JPEG tiles are YCbCr under Photometric=RGB; converting on read", path)
    return info


def _pyramid_pages(tif: Any, first: Any, subifds: int) -> list[Any]:
    """Level 0 and its reduced copies: main-chain tiled pages, else the SubIFD levels."""
    pages = [first]
    for page in list(tif.pages)[1:]:
        if _is_reduced_copy(first, page, pages[-1]):
            pages.append(page)
    if len(pages) == 1 and subifds:
        for level in tif.series[0].levels[1:]:
            page = level.keyframe
            if _is_reduced_copy(first, page, pages[-1]):
                pages.append(page)
    return pages


def _is_reduced_copy(first: Any, page: Any, previous: Any) -> bool:
    """A tiled, plain-reduced page with level 0's aspect ratio, smaller than the last level.

    Excludes label and macro images (other aspect ratios, stripped, or NewSubfileType bits
    beyond "reduced"), thumbnails stored as strips, and masks.
    """
    if not page.is_tiled or int(getattr(page, "subfiletype", 0)) & ~_REDUCED_IMAGE:
        return False
    if int(page.samplesperpixel) != int(first.samplesperpixel):
        return False
    width, height = int(page.imagewidth), int(page.imagelength)
    if width >= int(previous.imagewidth) or height >= int(previous.imagelength):
        return False
    ratio = (first.imagewidth / first.imagelength) / (width / height)
    return abs(ratio - 1.0) <= _ASPECT_TOLERANCE + 2.0 / min(width, height)


def _check_declared_size(path: Path, page: Any) -> None:
    """Refuse absurd declared sizes or tile tables before anything is allocated."""
    width, height = int(page.imagewidth), int(page.imagelength)
    if width < 1 or height < 1 or max(width, height) > MAX_SIDE_PX or width * height > MAX_PIXELS:
        raise SlideFormatError(
            f"{path}: declares {width} x {height} px, beyond what any scanner writes "
            f"(at most {MAX_SIDE_PX} px a side and {MAX_PIXELS} px); refusing a possible "
            "decompression bomb"
        )
    if page.is_tiled:
        tile_w, tile_h = int(page.tilewidth), int(page.tilelength)
        expected = math.ceil(width / tile_w) * math.ceil(height / tile_h)
        found = len(page.dataoffsets)
        if found != expected * (1 if page.planarconfig == 1 else int(page.samplesperpixel)):
            raise SlideFormatError(
                f"{path}: declares {width} x {height} px in {tile_w} x {tile_h} tiles "
                f"({expected} tiles) but its tile table has {found} entries"
            )


def _check_tile_extents(path: Path, page: Any, level: int, file_size: int) -> None:
    offsets = page.dataoffsets
    counts = page.databytecounts
    if not offsets or len(offsets) != len(counts):
        raise SlideFormatError(f"{path}: level {level} has no tile offsets/byte counts")
    end = max(o + c for o, c in zip(offsets, counts, strict=True) if c)
    if end > file_size:
        raise SlideFormatError(
            f"{path}: truncated: level {level} tile data ends at byte {end} "
            f"but the file has {file_size} bytes"
        )


def _jpeg_is_ycbcr_under_rgb(page: Any, fh: BinaryIO) -> bool:
    """True when JPEG tiles tagged Photometric=RGB actually carry YCbCr (libjpeg's rules)."""
    if int(page.compression) != _JPEG or int(page.photometric) != _PHOTOMETRIC_RGB:
        return False
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
        if count:
            fh.seek(offset)
            return _jpeg_stream_is_ycbcr(fh.read(min(count, 65_536)))
    return False


def _jpeg_stream_is_ycbcr(data: bytes) -> bool:
    """True only when a 3-component JPEG stream declares YCbCr itself.

    A JFIF (APP0) marker or an Adobe (APP14) marker with transform 1 mean YCbCr to any
    decoder. Streams without such a marker are left to the TIFF tag, as OpenSlide and
    cuCIM do (Aperio writes RGB tiles without markers and relies on the tag).
    """
    pos = 2 if data[:2] == b"\xff\xd8" else 0
    declared_ycbcr = False
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE0 and segment.startswith(b"JFIF\x00"):
            declared_ycbcr = True
        elif marker == 0xEE and segment.startswith(b"Adobe") and len(segment) >= 12:
            declared_ycbcr = segment[11] == 1
        elif marker in (0xC0, 0xC1, 0xC2) and len(segment) >= 6:
            return declared_ycbcr and segment[5] == 3
        elif marker == 0xDA:
            break
        pos += 2 + length
    return False
