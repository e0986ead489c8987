"""The slide: an H&E-like lymph-node region rendered, JPEG-tiled and written as a TIFF with
shared JPEGTables (or a given JPEG-tiled TIFF), and the ``slide`` stage that loads it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
from torchvision.io import encode_jpeg

from wsi_bench.gpu_probe.config import Json, Plan
from wsi_bench.gpu_probe.decode import assemble, decode_tiles_cpu
from wsi_bench.gpu_probe.tiff_jpeg import (
    jpeg_subsampling,
    merge_jpeg_tables,
    read_jpeg_tiles,
    split_jpeg_tables,
    write_jpeg_tiff,
)

if TYPE_CHECKING:
    from wsi_bench.gpu_probe.context import Context


def _smooth_noise(generator: torch.Generator, side: int, sigma: float) -> torch.Tensor:
    """Periodic Gaussian-filtered white noise [side, side], mean 0 and std 1."""
    white = torch.randn(side, side, generator=generator)
    fy = torch.fft.fftfreq(side)[:, None]
    fx = torch.fft.rfftfreq(side)[None, :]
    kernel = torch.exp(-2.0 * (math.pi * sigma) ** 2 * (fy**2 + fx**2))
    smooth = torch.fft.irfft2(torch.fft.rfft2(white) * kernel, s=(side, side))
    return (smooth - smooth.mean()) / (smooth.std() + 1e-12)


_HEMATOXYLIN = torch.tensor([0.65, 0.70, 0.29])
_EOSIN = torch.tensor([0.07, 0.99, 0.11])
_GLASS = torch.tensor([238.0, 236.0, 241.0])


def synthetic_he(side: int, seed: int) -> npt.NDArray[np.uint8]:
    """An H&E-like lymph-node image [side, side, 3]: tissue sheets with fat holes and glass,
    eosin stroma, lymphoid areas dense with small dark nuclei, sensor noise (Beer-Lambert
    colour, Ruifrok's stain vectors)."""
    gen = torch.Generator().manual_seed(seed)
    sheets = _smooth_noise(gen, side, side / 14)
    fat = _smooth_noise(gen, side, 12.0)
    tissue = torch.sigmoid((sheets + 0.8) * 20) * (1 - torch.sigmoid((fat - 2.0) * 8))
    density = _smooth_noise(gen, side, 60.0)
    nuclei = torch.sigmoid((_smooth_noise(gen, side, 3.0) - (1.3 - 0.5 * density)) * 5)
    chromatin = _smooth_noise(gen, side, 1.0)
    eosin = 0.45 + 0.15 * _smooth_noise(gen, side, 10.0) + 0.08 * _smooth_noise(gen, side, 2.0)
    haematoxylin = 0.08 + 1.1 * nuclei * (1 + 0.2 * chromatin)
    h = _HEMATOXYLIN / _HEMATOXYLIN.norm()
    e = _EOSIN / _EOSIN.norm()
    density_od = haematoxylin[..., None] * h + eosin.clamp(min=0.05)[..., None] * e
    rgb = 255.0 * torch.exp(-density_od)
    rgb = tissue[..., None] * rgb + (1 - tissue[..., None]) * _GLASS
    rgb = rgb + 2.5 * torch.randn(side, side, 3, generator=gen)
    return rgb.clamp(0, 255).round().to(torch.uint8).numpy()


def write_synthetic_slide(path: Path, plan: Plan, seed: int) -> Json:
    """Render, JPEG-encode (torchvision) and write the synthetic slide region; describe it."""
    image = synthetic_he(plan.canvas, seed)
    t = plan.tile
    tiles, tables, shared = [], None, 0
    for y in range(0, plan.canvas, t):
        for x in range(0, plan.canvas, t):
            chw = torch.from_numpy(image[y : y + t, x : x + t]).permute(2, 0, 1).contiguous()
            stream = encode_jpeg(chw, quality=plan.jpeg_quality).numpy().tobytes()
            own_tables, abbreviated = split_jpeg_tables(stream)
            if tables is None:
                tables = own_tables
            if own_tables == tables:
                tiles.append(abbreviated)
                shared += 1
            else:  # a tile with other tables stays self-contained
                tiles.append(stream)
    subsampling = jpeg_subsampling(merge_jpeg_tables(tiles[0], tables))
    write_jpeg_tiff(path, plan.canvas, plan.canvas, t, tiles, tables, subsampling)
    return {"written": True, "tiles_with_shared_tables": shared, "subsampling": subsampling}


def stage_slide(ctx: Context, deadline: float) -> str:
    """Write the synthetic slide (or take ``ctx.slide_in``), read its centred block's raw tiles
    and decode them once on the CPU: the canvas the network stages cut regions from."""
    info: Json
    if ctx.slide_in is not None:
        path, info = ctx.slide_in, {"written": False}
    else:
        path = ctx.slide_out or ctx.scratch / "synthetic_slide.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        info = write_synthetic_slide(path, ctx.plan, ctx.seed)
    tileset = read_jpeg_tiles(path, ctx.plan.canvas)
    nbytes = sum(len(t) for t in tileset.tiles)
    image = assemble(decode_tiles_cpu(tileset.tiles, tileset.tables), tileset.grid).numpy()
    ctx.tileset, ctx.canvas = tileset, image
    ctx.probe.slide = {
        **info,
        "path": str(path),
        "page_size": tileset.page_size,
        "tile": tileset.tile[0],
        "tiles": len(tileset.tiles),
        "grid": tileset.grid,
        "megapixels": tileset.megapixels,
        "bytes_per_tile": nbytes / len(tileset.tiles),
        "bits_per_pixel": 8 * nbytes / (tileset.megapixels * 1e6),
        "jpeg_tables": tileset.tables is not None,
        "photometric": tileset.photometric,
    }
    if tileset.photometric not in (6,):
        return f"ok: photometric {tileset.photometric}: tiles decoded as their JPEG markers say"
    return "ok"
