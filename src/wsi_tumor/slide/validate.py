"""Pre-flight check every slide goes through before a backend opens it.

It reads only the TIFF structure (tifffile plus a raw walk of the IFD chain) and the first
bytes of one tile per level, never pixel data, so it costs milliseconds even on a
gigapixel slide. It turns the ways a file can be unusable into typed errors whose message
names the file and the problem, and it records facts the backends need:

- the pyramid levels the readers see: level 0 plus the tiled reduced-resolution pages
  (NewSubfileType bit 1) of the main IFD chain. A pyramid stored only in SubIFDs is not
  seen by the installed cuCIM (26.06) nor OpenSlide (4.0) and is reported as such;
- level-0 microns per pixel from XResolution/YResolution/ResolutionUnit;
- levels whose JPEG tiles are YCbCr (JFIF) although the TIFF says Photometric=RGB:
  cuCIM and OpenSlide follow the tag and return raw Y/Cb/Cr samples, so the readers
  convert them (the real H&E sample, a Bio-Formats export, is such a file);
- byte order: OpenSlide's TIFF parser cannot read big-endian classic TIFF.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from wsi_tumor.errors import NotPyramidalError, SlideFormatError, SlideNotFoundError

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


@dataclass(frozen=True)
class SlideInfo:
    """What the pre-flight learned about a slide file.

    Attributes:
        path: The slide file.
        level_dimensions: (w, h) of each level the readers see, level 0 first.
        mpp: Level-0 microns per pixel (x, y) from the TIFF resolution tags, or None.
        ycbcr_levels: Per level, True when its JPEG tiles hold YCbCr under Photometric=RGB.
        big_endian_classic: Classic (non-Big) TIFF in big-endian byte order.
        subifd_levels: Reduced-resolution images stored in level 0's SubIFDs (not read).
    """

    path: Path
    level_dimensions: tuple[tuple[int, int], ...]
    mpp: tuple[float, float] | None
    ycbcr_levels: tuple[bool, ...]
    big_endian_classic: bool
    subifd_levels: int

    @property
    def level_count(self) -> int:
        """Number of levels the readers see."""
        return len(self.level_dimensions)


def inspect_slide(path: str | Path, require_pyramid: bool = False) -> SlideInfo:
    """Check that ``path`` is a readable tiled TIFF-family slide and describe it.

    Args:
        path: The slide file.
        require_pyramid: Raise when the slide has a single resolution level.

    Returns:
        The facts the readers need (see :class:`SlideInfo`).

    Raises:
        SlideNotFoundError: The file does not exist.
        SlideFormatError: Not a TIFF, unreadable header, not tiled, truncated, not RGB.
        NotPyramidalError: ``require_pyramid`` and only one level is readable.
    """
    import tifffile

    p = Path(path)
    if not p.exists():
        raise SlideNotFoundError(f"{p}: slide file does not exist")
    if not p.is_file():
        raise SlideFormatError(f"{p}: not a regular file")
    file_size = p.stat().st_size
    with p.open("rb") as fh:
        head = fh.read(16)
        _check_magic(p, head, file_size)
        _walk_ifd_chain(p, fh, head, file_size)
    try:
        with tifffile.TiffFile(p) as tif:
            return _describe(p, tif, file_size, require_pyramid)
    except SlideFormatError:  # NotPyramidalError included
        raise
    except Exception as exc:  # tifffile raises many types on corrupt input
        raise SlideFormatError(f"{p}: unreadable TIFF structure: {exc}") from exc


def _check_magic(path: Path, head: bytes, file_size: int) -> None:
    if file_size < 8:
        raise SlideFormatError(f"{path}: {file_size} bytes is too short for a TIFF header")
    if head[:4] in _TIFF_MAGICS:
        return
    for magic, name in _OTHER_FORMATS.items():
        if head.startswith(magic):
            raise SlideFormatError(f"{path}: not a TIFF-family slide, the file is {name}")
    raise SlideFormatError(
        f"{path}: not a TIFF-family slide (file starts with {head[:8]!r}, not a TIFF header)"
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


def _describe(path: Path, tif: Any, file_size: int, require_pyramid: bool) -> SlideInfo:
    if not tif.pages:
        raise SlideFormatError(f"{path}: TIFF has no image")
    first = tif.pages[0]
    if not first.is_tiled:
        raise SlideFormatError(
            f"{path}: level 0 is not tiled (stripped TIFF); whole-slide readers need a tiled TIFF"
        )
    samples = int(first.samplesperpixel)
    if samples not in (3, 4) or first.dtype is None or first.dtype.itemsize != 1:
        raise SlideFormatError(
            f"{path}: level 0 is {samples}-sample {first.dtype}, expected 8-bit RGB"
        )
    pages = [first]
    for page in list(tif.pages)[1:]:
        if getattr(page, "subfiletype", 0) & _REDUCED_IMAGE and page.is_tiled:
            pages.append(page)
    with open(path, "rb") as fh:
        for level, page in enumerate(pages):
            _check_tile_extents(path, page, level, file_size)
        ycbcr = tuple(_jpeg_is_ycbcr_under_rgb(page, fh) for page in pages)
    dimensions = tuple((int(page.imagewidth), int(page.imagelength)) for page in pages)
    subifds = len(first.subifds or ())
    info = SlideInfo(
        path=path,
        level_dimensions=dimensions,
        mpp=_resolution_mpp(first),
        ycbcr_levels=ycbcr,
        big_endian_classic=tif.byteorder == ">" and not tif.is_bigtiff,
        subifd_levels=subifds,
    )
    if subifds and len(pages) == 1:
        log.warning(
            "%s: %d reduced-resolution images are stored in SubIFDs, which cuCIM and "
            "OpenSlide do not read; the slide opens as a single level",
            path,
            subifds,
        )
    if require_pyramid and info.level_count < 2:
        w, h = dimensions[0]
        hint = (
            f"; its {subifds} SubIFD levels are not read by cuCIM/OpenSlide, store them as "
            "reduced-resolution pages (NewSubfileType=1) instead"
            if subifds
            else ""
        )
        raise NotPyramidalError(
            f"{path}: single-level image ({w} x {h} px) where a pyramid is needed{hint}"
        )
    if any(ycbcr):
        log.info("%s: JPEG tiles are YCbCr under Photometric=RGB; converting on read", path)
    return info


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


def _resolution_mpp(page: Any) -> tuple[float, float] | None:
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
    return values[0], values[1]


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
