"""What kind of whole-slide file a path is, and which reader opens it best.

Every common WSI format is accepted: Aperio ``.svs`` (JPEG and JPEG 2000 tiles), generic
tiled ``.tif``/``.tiff`` (CAMELYON16), OME-TIFF (pyramids in SubIFDs too), Hamamatsu
``.ndpi``/``.vms``/``.vmu``, 3DHISTECH ``.mrxs`` (with its data folder), Leica ``.scn``,
Ventana ``.bif``, Philips TIFF, Sakura ``.svslide``, Zeiss ``.czi`` and DICOM WSI (a folder
of ``.dcm`` files, or one of them). The reader ``auto`` picks per slide: cuCIM where it reads
the format correctly (generic TIFF, Aperio, OME-TIFF with a page pyramid), tiffslide for a
pyramid stored in SubIFDs (which cuCIM and OpenSlide do not see), and OpenSlide for the
vendor formats; when the first choice cannot open a file the next one is tried and the
fallback is reported. Last for the TIFF formats comes the torchvision reader, which needs no
codec package (JPEG tiles decoded by torchvision, on the CPU; ``nvjpeg`` on a GPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

ReaderName = Literal["cucim", "openslide", "tiffslide", "torchvision", "nvjpeg"]
READERS: Final[tuple[ReaderName, ...]] = ("cucim", "openslide", "tiffslide", "torchvision")
"""Reader backends that run on any machine."""
GPU_READERS: Final[tuple[ReaderName, ...]] = ("nvjpeg",)
"""Reader backends that need a CUDA device (never picked by ``auto``)."""
READER_CHOICES: Final[tuple[str, ...]] = ("auto", *READERS, *GPU_READERS)
"""What ``--reader`` accepts: a backend, or ``auto`` to pick one per slide."""

SLIDE_SUFFIXES: Final[tuple[str, ...]] = (
    ".tif", ".tiff", ".svs", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".svslide",
    ".czi", ".dcm",
)  # fmt: skip
"""File endings a directory scan picks up (a DICOM folder is found by its ``.dcm`` files)."""

TIFF_FORMATS: Final = frozenset({"generic-tiff", "aperio", "ome-tiff", "philips"})
"""TIFF formats whose pyramid the pre-flight reads itself (levels, tiles, resolution)."""
CUCIM_FORMATS: Final = frozenset({"generic-tiff", "aperio", "ome-tiff"})
"""Formats cuCIM (26.x) reads correctly; cuCIM cannot open NDPI, MRXS, SCN, BIF, DICOM."""
_SUFFIX_FORMATS: Final = {
    ".ndpi": "hamamatsu", ".vms": "hamamatsu", ".vmu": "hamamatsu", ".mrxs": "mirax",
    ".scn": "leica", ".bif": "ventana", ".svslide": "sakura", ".czi": "zeiss", ".dcm": "dicom",
}  # fmt: skip
_DICOM_MAGIC_OFFSET = 128


def tiff_format(tif: object) -> str:
    """The format of an open ``tifffile.TiffFile`` from its vendor flags."""
    for flag, name in (
        ("is_svs", "aperio"),
        ("is_ndpi", "hamamatsu"),
        ("is_scn", "leica"),
        ("is_bif", "ventana"),
        ("is_philips", "philips"),
        ("is_ome", "ome-tiff"),
    ):
        if getattr(tif, flag, False):
            return name
    return "generic-tiff"


def format_from_suffix(path: Path) -> str | None:
    """The vendor format a non-TIFF file ending names (``.mrxs`` -> mirax), if any."""
    return _SUFFIX_FORMATS.get(path.suffix.lower())


def is_dicom_file(head: bytes) -> bool:
    """Whether a file's first 132 bytes carry the DICOM preamble's ``DICM``."""
    return head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM"


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files of a folder (by content, whatever their names), sorted."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.is_file():
            with path.open("rb") as handle:
                if is_dicom_file(handle.read(_DICOM_MAGIC_OFFSET + 4)):
                    found.append(path)
    return found


def reader_order(fmt: str, subifd_pyramid: bool) -> list[ReaderName]:
    """Backends ``auto`` tries for a format, best first."""
    if subifd_pyramid:
        return ["tiffslide", "cucim", "openslide", "torchvision"]
    if fmt in CUCIM_FORMATS:
        return ["cucim", "openslide", "tiffslide", "torchvision"]
    if fmt in TIFF_FORMATS:
        return ["openslide", "torchvision"]
    return ["openslide"]
