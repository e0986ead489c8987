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
    path: Path | None = None, count: int = 32, seed: int = 0
) -> npt.NDArray[np.uint8]:
    """Read ``count`` uint8 patches [count, 224, 224, 3] at random places of a slide.

    Uses ``wsi_tumor.slide.open_slide``; when that fails (e.g. no reader backend) reads
    the image's level 0 with tifffile. ``path=None`` means :data:`DEFAULT_PARITY_IMAGE`.

    Raises:
        ExportError: when the image is missing, unreadable or smaller than one patch.
    """
    path = Path(path) if path is not None else DEFAULT_PARITY_IMAGE
    if not path.is_file():
        raise ExportError(f"{path}: parity image does not exist (pass --parity-slide)")
    try:
        patches = _sample_with_reader(path, count, seed)
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
        )
    log.info("read %d parity patches from %s", count, path)
    return patches


def _sample_with_reader(path: Path, count: int, seed: int) -> npt.NDArray[np.uint8]:
    from wsi_tumor.slide import open_slide

    with open_slide(path) as reader:
        width, height = reader.level_dimensions[0]
        return _sample(
            width, height, count, seed, path, lambda x, y, s: reader.read_region((x, y), (s, s), 0)
        )


def _sample(
    width: int,
    height: int,
    count: int,
    seed: int,
    path: Path,
    read: Callable[[int, int, int], npt.NDArray[np.uint8]],
) -> npt.NDArray[np.uint8]:
    size = contract.PATCH_SIZE
    if width < size or height < size:
        raise ExportError(f"{path}: {width} x {height} px is smaller than one {size} px patch")
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
