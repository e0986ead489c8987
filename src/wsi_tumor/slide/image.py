"""Pixel helpers the readers and the tissue mask share (no reader state)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def downsamples_from_dimensions(dimensions: Sequence[tuple[int, int]]) -> tuple[float, ...]:
    """Downsample of each level as OpenSlide defines it: mean of the width and height ratios.

    cuCIM uses the same formula (in float32); computing it here in float64 from the level
    sizes makes every backend report identical values.
    """
    w0, h0 = dimensions[0]
    return tuple((w0 / w + h0 / h) / 2.0 for w, h in dimensions)


def ycbcr_to_rgb(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Convert full-range JFIF YCbCr (ITU-R BT.601) uint8 pixels to RGB, in a new array.

    Used when a decoder was told by a TIFF's Photometric=RGB tag that JPEG tiles hold RGB
    while the JPEG streams say (JFIF marker) that they hold YCbCr: the decoder then returns
    the raw Y, Cb, Cr samples and this applies the conversion libjpeg would have applied.
    """
    ycc = pixels.astype(np.float32)
    y = ycc[..., 0]
    cb = ycc[..., 1] - np.float32(128.0)
    cr = ycc[..., 2] - np.float32(128.0)
    rgb = np.empty(pixels.shape, np.float32)
    rgb[..., 0] = y + np.float32(1.402) * cr
    rgb[..., 1] = y - np.float32(0.344136) * cb - np.float32(0.714136) * cr
    rgb[..., 2] = y + np.float32(1.772) * cb
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def halve(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """2x block-mean downsample, rounded to nearest; a partial edge block averages its pixels.

    The result is (ceil(h / 2), ceil(w / 2), 3).
    """
    return block_mean(image, 2)


def block_mean(image: npt.NDArray[np.uint8], factor: int) -> npt.NDArray[np.uint8]:
    """Mean of each ``factor`` x ``factor`` block, rounded to uint8; edge blocks may be partial.

    Args:
        image: (h, w, c) uint8.
        factor: Block side, >= 1.

    Returns:
        (ceil(h / factor), ceil(w / factor), c) uint8.
    """
    if factor < 1:
        raise ValueError(f"block factor must be >= 1, got {factor}")
    if factor == 1:
        return image.copy()
    height, width = image.shape[:2]
    row_starts = np.arange(0, height, factor)
    col_starts = np.arange(0, width, factor)
    sums = np.add.reduceat(image, row_starts, axis=0, dtype=np.float64)
    sums = np.add.reduceat(sums, col_starts, axis=1)
    rows = np.diff(np.append(row_starts, height))
    cols = np.diff(np.append(col_starts, width))
    counts = np.outer(rows, cols).astype(np.float64)[..., None]
    return np.clip(np.rint(sums / counts), 0, 255).astype(np.uint8)
