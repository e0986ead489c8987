"""Patches from real slides and the ONNX Runtime vs PyTorch parity check."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import torch

from wsi_tumor import contract
from wsi_tumor.data.samples import REAL_HE
from wsi_tumor.errors import ExportError, SlideError
from wsi_tumor.export.onnx_export import ProbabilityHead
from wsi_tumor.models.resnet_fcn import TumorResNetFCN

log = logging.getLogger(__name__)

DEFAULT_PARITY_IMAGE: Final = REAL_HE
"""The real H&E image (1101 x 1101, OpenSlide test data) patches come from by default."""
FP32_TOLERANCE: Final = 1e-4
"""Max |probability difference| ONNX Runtime (fp32) may show against PyTorch."""
TENSORRT_TOLERANCE: Final = {"fp32": 1e-3, "fp16": 1e-2, "int8": 5e-2}
"""Max |probability difference| a TensorRT plan may show against ONNX Runtime."""
MAX_WHOLE_IMAGE_PIXELS: Final = 64_000_000


def _read_level0(path: Path) -> npt.NDArray[np.uint8]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            level = tif.series[0].levels[0]
            if int(np.prod(level.shape[:2])) > MAX_WHOLE_IMAGE_PIXELS:
                raise ExportError(
                    f"{path}: {level.shape[1]} x {level.shape[0]} px is too large to read "
                    "whole; install the slide readers (wsi_tumor.slide)"
                )
            image = np.asarray(level.asarray())
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{path}: cannot read as TIFF: {exc}") from exc
    if image.ndim != 3 or image.shape[-1] < contract.CHANNELS:
        raise ExportError(f"{path}: expected an RGB image, got shape {image.shape}")
    return np.ascontiguousarray(image[..., : contract.CHANNELS]).astype(np.uint8)


def sample_patches(
    path: Path | None = None, count: int = 32, seed: int = 0, size: int = contract.PATCH_SIZE
) -> npt.NDArray[np.uint8]:
    """Read ``count`` uint8 squares [count, size, size, 3] (patches) at random places.

    Uses ``wsi_tumor.slide.open_slide``; when that fails (e.g. no reader backend) reads
    the image's level 0 with tifffile. ``path=None`` means :data:`DEFAULT_PARITY_IMAGE`.

    Raises:
        ExportError: when the image is missing, unreadable or smaller than one patch.
    """
    path = Path(path) if path is not None else DEFAULT_PARITY_IMAGE
    if not path.is_file():
        raise ExportError(f"{path}: parity image does not exist (pass --parity-slide)")
    try:
        patches = _sample_with_reader(path, count, seed, size)
    except SlideError as exc:
        log.warning("%s: slide reader failed (%s); reading level 0 with tifffile", path, exc)
        image = _read_level0(path)
        patches = _sample(
            image.shape[1],
            image.shape[0],
            count,
            seed,
            path,
            lambda x, y, s: image[y : y + s, x : x + s],
            size,
        )
    log.info("read %d parity patches from %s", count, path)
    return patches


def _sample_with_reader(path: Path, count: int, seed: int, size: int) -> npt.NDArray[np.uint8]:
    from wsi_tumor.slide import open_slide

    with open_slide(path) as reader:
        width, height = reader.level_dimensions[0]
        return _sample(
            width,
            height,
            count,
            seed,
            path,
            lambda x, y, s: reader.read_region((x, y), (s, s), 0),
            size,
        )


def _sample(
    width: int,
    height: int,
    count: int,
    seed: int,
    path: Path,
    read: Callable[[int, int, int], npt.NDArray[np.uint8]],
    size: int,
) -> npt.NDArray[np.uint8]:
    if width < size or height < size:
        raise ExportError(f"{path}: {width} x {height} px is smaller than one {size} px square")
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, width - size + 1, count)
    ys = rng.integers(0, height - size + 1, count)
    return np.stack(
        [np.asarray(read(int(x), int(y), size), np.uint8) for x, y in zip(xs, ys, strict=True)]
    )


def to_network_input(patches: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """uint8 [B, 224, 224, 3] -> normalised FP32 [B, 3, 224, 224] (as the tiler does)."""
    return np.ascontiguousarray(contract.normalise(patches).transpose(0, 3, 1, 2))


def torch_probabilities(
    model: torch.nn.Module, inputs: npt.NDArray[np.float32], batch: int = 16
) -> npt.NDArray[np.float32]:
    """sigmoid(logit) [B, 1] of the PyTorch model on normalised inputs, on the CPU."""
    head = ProbabilityHead(model).eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            outs.append(head(torch.from_numpy(inputs[start : start + batch])).numpy())
    return np.concatenate(outs).astype(np.float32)


def onnx_probabilities(
    onnx_path: Path, inputs: npt.NDArray[np.float32], batch: int = 16
) -> npt.NDArray[np.float32]:
    """Probabilities [B, 1] of ``onnx_path`` under ONNX Runtime's CPU provider."""
    from wsi_tumor.serving.onnx_session import build_session

    session = build_session(onnx_path)
    outs = [
        session.run(
            [contract.PROBABILITIES_TENSOR], {contract.PATCHES_TENSOR: inputs[s : s + batch]}
        )[0]
        for s in range(0, len(inputs), batch)
    ]
    return np.concatenate(outs).astype(np.float32)


PARITY_REGION_CELLS: Final = (contract.DENSE_MIN_CELLS, 8)
"""k of the regions the dense model's parity is checked on (both fit the real sample)."""


def sample_regions(
    path: Path | None, count: int, seed: int = 0
) -> list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]]:
    """Dense-model parity inputs: for each k of :data:`PARITY_REGION_CELLS`, ``count`` real
    regions [N, H, W, 3] and a random cell mask [N, k, k] (about 70 % true)."""
    rng = np.random.default_rng(seed)
    out = []
    for cells in PARITY_REGION_CELLS:
        regions = sample_patches(path, count, seed, contract.region_size(cells))
        out.append((regions, rng.random((count, cells, cells)) < 0.7))
    return out


def torch_dense(
    model: TumorResNetFCN, regions: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float32]:
    """The dense grid [N, k, k] of PyTorch's fully convolutional pass, on the CPU."""
    from wsi_tumor.models.dense import DenseTumorNet

    with torch.no_grad():
        grid = DenseTumorNet(model).eval()(torch.from_numpy(regions), torch.from_numpy(mask))
    return grid.numpy().astype(np.float32)


def onnx_dense(
    onnx_path: Path, regions: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float32]:
    """The dense grid [N, k, k] of the exported graph under ONNX Runtime's CPU provider."""
    from wsi_tumor.serving.onnx_session import build_session

    feed = {contract.REGIONS_TENSOR: regions, contract.CELL_MASK_TENSOR: mask}
    (grid,) = build_session(onnx_path).run([contract.GRID_TENSOR], feed)
    return np.asarray(grid, np.float32)


def check_parity(
    reference: npt.NDArray[np.float32],
    candidate: npt.NDArray[np.float32],
    tolerance: float,
    what: str,
) -> float:
    """Return max |reference - candidate|; raise ExportError when it exceeds ``tolerance``."""
    if reference.shape != candidate.shape:
        raise ExportError(f"{what}: output shapes differ: {reference.shape} vs {candidate.shape}")
    diff = float(np.max(np.abs(reference.astype(np.float64) - candidate)))
    log.info(
        "%s: max |diff| = %.3g over %d patches (tolerance %.1g)",
        what,
        diff,
        len(reference),
        tolerance,
    )
    if not diff <= tolerance:
        raise ExportError(f"{what}: max |diff| {diff:.3g} exceeds the tolerance {tolerance:.1g}")
    return diff
