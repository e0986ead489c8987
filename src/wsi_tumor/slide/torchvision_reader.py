"""torchvision backend: JPEG-tiled TIFF slides decoded by torchvision, on the CPU or the GPU.

For machines without imagecodecs, cuCIM, OpenSlide or tiffslide (a GPU image that has only
torch, torchvision and tifffile), and the GPU decode path of a GPU deployment: the reader
takes each tile's bytes straight from the file (the pre-flight's tile tables), puts the
page's JPEGTables back in (:mod:`wsi_tumor.slide.jpeg`) and decodes with
``torchvision.io.decode_jpeg``: libjpeg-turbo on the CPU (reader ``torchvision``; it releases
the GIL, so reader threads scale), or nvJPEG batched on a CUDA device (reader ``nvjpeg``; on
A100/H100-class GPUs its hardware JPEG engines). ``auto`` falls back to ``torchvision`` last,
for the TIFF formats, when no other backend can open a slide.

Pixels: libjpeg-turbo is what cuCIM, OpenSlide and tifffile decode with, and the CPU reader
returns their pixels exactly; nvJPEG differs by IDCT rounding and chroma upsampling (mean
|difference| about a level, at most a few). Only JPEG tiles (TIFF compression 7) are read;
RGB tiles without a colour marker (Aperio) are marked RGB before decoding, as the TIFF tag
says (and decoded on the CPU even by ``nvjpeg``). A tile with no bytes reads as
:data:`FILL_VALUE` (the damage check reports it).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from wsi_tumor.errors import ReaderUnavailableError, SlideFormatError
from wsi_tumor.slide.base import FILL_VALUE, SlideReader
from wsi_tumor.slide.damage import DamageChecker, TileTable
from wsi_tumor.slide.image import downsamples_from_dimensions
from wsi_tumor.slide.jpeg import mark_rgb, merge_jpeg_tables
from wsi_tumor.slide.validate import SlideInfo

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_JPEG = 7
_PHOTOMETRIC_RGB = 2
_GPU_LOCK = threading.Lock()
"""nvJPEG decodes through one handle per process: one batch at a time."""
# torchvision 0.29 deprecates its codecs in favour of TorchCodec, which the GPU image lacks
warnings.filterwarnings("ignore", message=".*image decoding and encoding", category=UserWarning)
warnings.filterwarnings(
    "ignore", message=".*image decoding and encoding", category=DeprecationWarning
)


def decode_tiles(streams: Sequence[bytes], device: str = "cpu") -> list[torch.Tensor]:
    """Whole JPEG streams -> CHW uint8 RGB tensors on ``device`` (nvJPEG batched on CUDA).

    Raises:
        SlideFormatError: when a stream cannot be decoded.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(s), dtype=torch.uint8) for s in streams]
    try:
        if device == "cpu":
            return [decode_jpeg(d, mode=ImageReadMode.RGB) for d in data]
        with _GPU_LOCK:
            out = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as exc:
        raise SlideFormatError(f"JPEG tile cannot be decoded: {exc}") from exc
    return list(out) if isinstance(out, list) else [out]


def assemble_tiles(decoded: Sequence[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
    """Row-major CHW tiles of a (columns, rows) block -> one HWC uint8 image."""
    import torch

    cols, rows = grid
    stacked = torch.stack(list(decoded))  # [rows * cols, 3, th, tw]
    _, channels, th, tw = stacked.shape
    return (
        stacked.reshape(rows, cols, channels, th, tw)
        .permute(0, 3, 1, 4, 2)
        .reshape(rows * th, cols * tw, channels)
    )


@dataclass(frozen=True)
class _Level:
    table: TileTable
    tables: bytes | None
    mark_rgb: bool


def _level_pages(info: SlideInfo) -> list[Any]:
    """The tifffile pages of the pre-flight's levels (main chain, else the SubIFD series)."""
    import tifffile

    with tifffile.TiffFile(info.path) as tif:
        pages = [p for p in tif.pages if isinstance(p, tifffile.TiffPage) and p.is_tiled]
        pages += [level.keyframe for level in tif.series[0].levels[1:]]
        found = []
        for width, height in info.level_dimensions:
            size = (width, height)
            found.append(next(p for p in pages if (p.imagewidth, p.imagelength) == size))
        for page in found:  # the tag values are read while the file is open
            _ = page.jpegtables, page.photometric
        return found


class TorchvisionSlide(SlideReader):
    """A JPEG-tiled TIFF slide decoded by torchvision; build it with ``open_slide``.

    Args:
        info: The pre-flight description of the file (from ``inspect_slide``).

    Raises:
        ReaderUnavailableError: torchvision (or, for ``nvjpeg``, a CUDA device) is missing.
        SlideFormatError: not a tiled TIFF format, or a level is not JPEG-compressed.
    """

    reader_name = "torchvision"
    device: ClassVar[str] = "cpu"

    def __init__(self, info: SlideInfo) -> None:
        self._require_backend()
        path = info.path
        if not info.level_count or len(info.tile_tables) != info.level_count:
            raise SlideFormatError(
                f"{path}: the {self.reader_name} reader reads tiled TIFF formats only "
                f"({info.format} is not one)"
            )
        levels = []
        for level, (table, page) in enumerate(
            zip(info.tile_tables, _level_pages(info), strict=True)
        ):
            if table is None or table.compression != _JPEG:
                compression = None if table is None else table.compression
                raise SlideFormatError(
                    f"{path}: level {level} is not tiled JPEG (compression {compression}); "
                    f"the {self.reader_name} reader decodes JPEG tiles only"
                )
            ycbcr = bool(info.ycbcr_levels[level]) if info.ycbcr_levels else False
            rgb = int(page.photometric) == _PHOTOMETRIC_RGB and not ycbcr
            tables = bytes(page.jpegtables) if page.jpegtables else None
            levels.append(_Level(table, tables, rgb))
        self._levels = levels
        self._fd = os.open(path, os.O_RDONLY)
        super().__init__(
            path,
            info.level_dimensions,
            downsamples_from_dimensions(info.level_dimensions),
            info.mpp,
            info.mpp_source,
            info.format,
        )
        self.damage_checker = DamageChecker(path, info.tile_tables)

    def _require_backend(self) -> None:
        try:
            import torchvision.io  # noqa: F401
        except Exception as exc:
            raise ReaderUnavailableError(
                f"reader '{self.reader_name}' is unavailable: cannot import torchvision ({exc})"
            ) from exc

    def tile_table(self, level: int) -> TileTable:
        """Where ``level``'s tiles are in the file (size, grid, offsets, byte counts)."""
        return self._levels[level].table

    def tile_streams(self, level: int, indices: Sequence[int]) -> list[bytes | None]:
        """Whole JPEG streams of tiles ``indices`` of ``level`` (None: a tile with no bytes)."""
        spec = self._levels[level]
        streams: list[bytes | None] = []
        for index in indices:
            count = int(spec.table.counts[index])
            if count <= 0:
                streams.append(None)
                continue
            raw = os.pread(self._fd, count, int(spec.table.offsets[index]))
            stream = merge_jpeg_tables(raw, spec.tables)
            streams.append(mark_rgb(stream) if spec.mark_rgb else stream)
        return streams

    def _read_level(
        self, level: int, col: int, row: int, width: int, height: int
    ) -> npt.NDArray[np.uint8]:
        table = self._levels[level].table
        tw, th = table.tile_width, table.tile_height
        c0, r0 = col // tw, row // th
        c1, r1 = (col + width - 1) // tw, (row + height - 1) // th
        indices = [r * table.across + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
        streams = self.tile_streams(level, indices)
        present = [s for s in streams if s is not None]
        # nvJPEG's handling of the Adobe RGB marker is unverified: such tiles decode on the CPU
        device = "cpu" if self._levels[level].mark_rgb else self.device
        try:
            decoded = iter(decode_tiles(present, device))
        except SlideFormatError as exc:
            raise SlideFormatError(f"{self._path}: level {level}: {exc}") from exc
        tiles = [self._blank(th, tw, device) if s is None else next(decoded) for s in streams]
        if any(tuple(t.shape) != (3, th, tw) for t in tiles):
            raise SlideFormatError(f"{self._path}: level {level} has a tile not {tw} x {th}")
        block = assemble_tiles(tiles, (c1 - c0 + 1, r1 - r0 + 1))
        y, x = row - r0 * th, col - c0 * tw
        return np.ascontiguousarray(block[y : y + height, x : x + width].cpu().numpy())

    @staticmethod
    def _blank(height: int, width: int, device: str) -> torch.Tensor:
        import torch

        return torch.full((3, height, width), FILL_VALUE, dtype=torch.uint8, device=device)

    def _close(self) -> None:
        os.close(self._fd)


class NvjpegSlide(TorchvisionSlide):
    """The torchvision reader decoding on the first CUDA device with nvJPEG."""

    reader_name = "nvjpeg"
    device: ClassVar[str] = "cuda"

    def _require_backend(self) -> None:
        super()._require_backend()
        import torch

        if not torch.cuda.is_available():
            raise ReaderUnavailableError(
                f"reader '{self.reader_name}' is unavailable: torch sees no CUDA device"
            )
