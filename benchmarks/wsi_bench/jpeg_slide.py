"""Synthetic JPEG-tiled TIFF slides for the GPU tools, written without imagecodecs.

The GPU image has torch, torchvision and tifffile but no imagecodecs, so tifffile cannot
write JPEG there: tiles are encoded by torchvision, split into one shared ``JPEGTables``
stream and abbreviated tiles (as libtiff writes CAMELYON16's slides), and the few TIFF tags
are written here. Pages follow one another in the main IFD chain, the reduced ones marked
``NewSubfileType = 1``; tifffile, the product's readers and libtiff-based readers open the
result (tests/test_gpu_serve.py checks tifffile's pixels against the torchvision reader's).

Used by the GPU probe (one page) and the GPU serve check (a slide of 250,000 tissue cells
whose level-0 tiles repeat a few dozen encoded ones: the decode cost is real JPEG, the write
costs only bytes).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.slide.jpeg import EOI, SOI, TABLE_MARKERS, jpeg_segments

JPEG_QUALITY = 90


def split_jpeg_tables(stream: bytes) -> tuple[bytes, bytes]:
    """(tables, abbreviated stream): DQT/DHT moved to a tables-only stream, as libtiff writes."""
    segments = jpeg_segments(stream)
    tables = SOI + b"".join(s for m, s in segments if m in TABLE_MARKERS) + EOI
    abbreviated = SOI + b"".join(s for m, s in segments if m not in TABLE_MARKERS)
    return tables, abbreviated


def jpeg_subsampling(stream: bytes) -> tuple[int, int]:
    """(horizontal, vertical) sampling factors of the first component in the SOF segment."""
    for marker, segment in jpeg_segments(stream):
        if marker in (0xC0, 0xC1, 0xC2):
            factors = segment[11]  # FF Cn, length(2), P, Y(2), X(2), Nf, C1 id, C1 H<<4|V
            return factors >> 4, factors & 0x0F
    raise ValueError("JPEG stream has no SOF0/1/2 segment")


def encode_tile(pixels: npt.NDArray[np.uint8], quality: int = JPEG_QUALITY) -> bytes:
    """A whole baseline JPEG stream (YCbCr) of HWC uint8 ``pixels``, by torchvision."""
    import torch
    from torchvision.io import encode_jpeg

    chw = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()
    return bytes(encode_jpeg(chw, quality=quality).numpy().tobytes())


@dataclass(frozen=True)
class Page:
    """One tiled JPEG page (YCbCr): tiles row-major, abbreviated or whole.

    Attributes:
        width: Page width in pixels.
        height: Page height.
        tile: Tile side.
        tiles: Tile streams, row-major (the same bytes object may repeat).
        tables: The page's JPEGTables, or None (whole tiles).
        subsampling: Chroma subsampling of the tiles.
        reduced: A reduced-resolution copy of page 0 (NewSubfileType 1).
    """

    width: int
    height: int
    tile: int
    tiles: Sequence[bytes]
    tables: bytes | None
    subsampling: tuple[int, int]
    reduced: bool = False


def jpeg_page(
    image: npt.NDArray[np.uint8], tile: int, reduced: bool = False, quality: int = JPEG_QUALITY
) -> Page:
    """``image`` as a page of ``tile``-px tiles (edge tiles padded with white) sharing tables."""
    height, width = image.shape[:2]
    across, down = math.ceil(width / tile), math.ceil(height / tile)
    padded = np.full((down * tile, across * tile, 3), 255, np.uint8)
    padded[:height, :width] = image
    streams = [
        encode_tile(padded[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile], quality)
        for r in range(down)
        for c in range(across)
    ]
    return shared_tables_page(width, height, tile, streams, reduced)


def shared_tables_page(
    width: int, height: int, tile: int, streams: Sequence[bytes], reduced: bool = False
) -> Page:
    """A page whose tiles share the first tile's tables (others stay whole, as JPEG allows)."""
    tables, _ = split_jpeg_tables(streams[0])
    tiles = []
    for stream in streams:
        own, abbreviated = split_jpeg_tables(stream)
        tiles.append(abbreviated if own == tables else stream)
    return Page(width, height, tile, tiles, tables, jpeg_subsampling(streams[0]), reduced)


def _entry(tag: int, kind: int, values: Sequence[int] | bytes) -> tuple[int, int, int, bytes]:
    """(tag, type, count, payload) of one classic-TIFF IFD entry (little-endian)."""
    if kind in (2, 7):  # ASCII, UNDEFINED
        payload = bytes(values)
        return tag, kind, len(payload), payload
    fmt = {3: "H", 4: "I", 5: "I"}[kind]
    payload = struct.pack(f"<{len(values)}{fmt}", *values)
    return tag, kind, len(values) // 2 if kind == 5 else len(values), payload


def _ifd(page: Page, offsets: list[int], counts: list[int], mpp: float) -> list[tuple]:
    per_cm = round(1e4 / mpp * 1000)
    entries = [
        _entry(254, 4, [1 if page.reduced else 0]),
        _entry(256, 4, [page.width]),
        _entry(257, 4, [page.height]),
        _entry(258, 3, [8, 8, 8]),
        _entry(259, 3, [7]),  # JPEG
        _entry(262, 3, [6]),  # YCbCr
        _entry(277, 3, [3]),
        _entry(282, 5, [per_cm, 1000]),
        _entry(283, 5, [per_cm, 1000]),
        _entry(284, 3, [1]),
        _entry(296, 3, [3]),  # centimetre
        _entry(305, 2, b"wsi-tumor wsi_bench\0"),
        _entry(322, 4, [page.tile]),
        _entry(323, 4, [page.tile]),
        _entry(324, 4, offsets),
        _entry(325, 4, counts),
    ]
    if page.tables:
        entries.append(_entry(347, 7, page.tables))
    entries.append(_entry(530, 3, list(page.subsampling)))
    entries.append(_entry(532, 5, [0, 1, 255, 1, 128, 1, 255, 1, 128, 1, 255, 1]))
    return entries


def write_jpeg_tiff(path: Path, pages: Sequence[Page], mpp: float = contract.DEFAULT_MPP) -> int:
    """Write ``pages`` as one classic TIFF (tiles first, then each IFD); return its bytes.

    Written to a temporary name and moved into place, so a cut run leaves no half file.

    Raises:
        ValueError: when the file would pass 4 GiB (classic TIFF offsets).
    """
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(b"II*\0\0\0\0\0")  # IFD offset patched at the end
        position, pointer = 8, 4
        for page in pages:
            offsets, counts = [], []
            for data in page.tiles:
                offsets.append(position)
                counts.append(len(data))
                fh.write(data)
                position += len(data)
            entries = _ifd(page, offsets, counts, mpp)
            blobs, values = bytearray(), []
            for _tag, _kind, _count, payload in entries:  # out-of-line values, word aligned
                if len(payload) <= 4:
                    values.append(payload.ljust(4, b"\0"))
                else:
                    values.append(struct.pack("<I", position + len(blobs)))
                    blobs += payload + (b"\0" if len(payload) % 2 else b"")
            ifd_offset = position + len(blobs)
            ifd = bytearray(struct.pack("<H", len(entries)))
            for (tag, kind, count, _payload), value in zip(entries, values, strict=True):
                ifd += struct.pack("<HHI", tag, kind, count) + value
            fh.write(bytes(blobs))
            fh.write(bytes(ifd) + b"\0\0\0\0")
            if ifd_offset + len(ifd) + 4 >= 2**32:
                raise ValueError(f"{path}: over 4 GiB, too large for a classic TIFF")
            fh.seek(pointer)
            fh.write(struct.pack("<I", ifd_offset))
            fh.seek(0, os.SEEK_END)
            pointer = ifd_offset + len(ifd)
            position = pointer + 4
    os.replace(tmp, path)
    return position


def synthetic_he(side: int, seed: int) -> npt.NDArray[np.uint8]:
    """An H&E-like lymph-node image [side, side, 3]: tissue sheets with fat holes and glass,
    eosin stroma, lymphoid areas dense with small dark nuclei, sensor noise (Beer-Lambert
    colour, Ruifrok's stain vectors)."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    def smooth(sigma: float) -> torch.Tensor:  # periodic Gaussian-filtered noise, std 1
        white = torch.randn(side, side, generator=gen)
        fy, fx = torch.fft.fftfreq(side)[:, None], torch.fft.rfftfreq(side)[None, :]
        kernel = torch.exp(-2.0 * (math.pi * sigma) ** 2 * (fy**2 + fx**2))
        out = torch.fft.irfft2(torch.fft.rfft2(white) * kernel, s=(side, side))
        return (out - out.mean()) / (out.std() + 1e-12)

    sheets, fat = smooth(side / 14), smooth(12.0)
    tissue = torch.sigmoid((sheets + 0.8) * 20) * (1 - torch.sigmoid((fat - 2.0) * 8))
    density = smooth(60.0)
    nuclei = torch.sigmoid((smooth(3.0) - (1.3 - 0.5 * density)) * 5)
    haematoxylin = 0.08 + 1.1 * nuclei * (1 + 0.2 * smooth(1.0))
    eosin = 0.45 + 0.15 * smooth(10.0) + 0.08 * smooth(2.0)
    h = torch.tensor([0.65, 0.70, 0.29])
    e = torch.tensor([0.07, 0.99, 0.11])
    density_od = haematoxylin[..., None] * h / h.norm() + eosin.clamp(min=0.05)[..., None] * (
        e / e.norm()
    )
    glass = torch.tensor([238.0, 236.0, 241.0])
    rgb = tissue[..., None] * 255.0 * torch.exp(-density_od) + (1 - tissue[..., None]) * glass
    rgb = rgb + 2.5 * torch.randn(side, side, 3, generator=gen)
    return rgb.clamp(0, 255).round().to(torch.uint8).numpy()
