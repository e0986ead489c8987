"""The single source of the constants every stage agrees on.

Geometry: locations are (x, y) in level-0 pixels, sizes are (w, h), arrays are (H, W, C),
and probability maps are (rows, cols) = (y, x) at the mask level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# --- patches -----------------------------------------------------------------------------
PATCH_SIZE: Final = 224
"""Side of the square RGB patch the network classifies, in pixels at the inference level."""
CHANNELS: Final = 3
INFERENCE_LEVEL: Final = 0
"""Pyramid level patches are read from (level 0, about 0.243 um/px on CAMELYON16)."""

# --- inference grid -------------------------------------------------------------------------
MASK_LEVEL: Final = 6
"""Level of the tissue mask and the probability map: one patch per mask cell."""
PATCH_STRIDE: Final = 2**MASK_LEVEL
"""Level-0 pixels between neighbouring patch centres (one mask cell)."""
REGION_CELLS: Final = 8
"""Default k of the exact mode: a region sent to the ensemble covers k x k mask cells."""
DENSE_REGION_CELLS: Final = 32
"""Default k of the dense mode's largest regions: larger regions amortise the 160 px halo.

A block of k x k cells shrinks to the square bounding its tissue, or is halved (down to
:data:`DENSE_SPLIT_CELLS`) where its occupied halves cost fewer pixels, so sparse tissue is
not paid for at k = 32 (:func:`wsi_tumor.client.grid.plan_dense_regions`). Measured on the
2-core runner: dense throughput follows the pixels computed per tissue cell (``wsi-infer
--mode dense --region-cells K`` on the bench slide with the fixed-k planner before this one,
cells/s: k = 8: 349-368, 16: 383-406, 24: 341-350, 32: 449-468)."""
DENSE_SPLIT_CELLS: Final = 8
"""Smallest k the dense mode's planner halves a region down to."""
DENSE_MIN_CELLS: Final = 3
DENSE_MAX_CELLS: Final = 32
"""Range of k the dense model accepts (its TensorRT profile spans it)."""


def region_size(cells: int) -> int:
    """Side in level-0 pixels of a region covering ``cells`` x ``cells`` patch centres."""
    return PATCH_SIZE + (cells - 1) * PATCH_STRIDE


def cell_patch_origin(col: int, row: int) -> tuple[int, int]:
    """Level-0 (x, y) top-left of the patch centred in mask cell (col, row).

    The centre is ((col + 0.5) * stride, (row + 0.5) * stride), as MONAI's
    ``MaskedPatchWSIDataset(mask_level=6, patch_size=224)`` places it.
    """
    half = PATCH_SIZE // 2
    return (
        col * PATCH_STRIDE + PATCH_STRIDE // 2 - half,
        row * PATCH_STRIDE + PATCH_STRIDE // 2 - half,
    )


# --- training grid (MONAI bundle / NCRF) -------------------------------------------------
GRID_CELL: Final = 256
"""Side of one training grid cell at level 0; the patch is its centre 224 x 224 crop."""
GRID_SHAPE: Final = 3
"""The training region is GRID_SHAPE x GRID_SHAPE cells (768 x 768 at level 0)."""
TRAIN_REGION: Final = GRID_CELL * GRID_SHAPE

# --- intensity ----------------------------------------------------------------------------
INTENSITY_IN: Final = (0.0, 255.0)
INTENSITY_OUT: Final = (-1.0, 1.0)


def normalise(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Scale uint8 intensities from [0, 255] to [-1, 1] as the MONAI bundle's training does.

    Same arithmetic as ``ScaleIntensityRange(a_min=0, a_max=255, b_min=-1, b_max=1)``.
    Works on any layout; the caller transposes HWC to CHW.
    """
    import numpy as np

    lo, hi = INTENSITY_IN
    out_lo, out_hi = INTENSITY_OUT
    scaled = (pixels.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return scaled * np.float32(out_hi - out_lo) + np.float32(out_lo)


# --- resolution -----------------------------------------------------------------------------
DEFAULT_MPP: Final = 0.243
"""CAMELYON16 level-0 resolution in microns per pixel, used when FROC needs a fallback."""
MODEL_MPP: Final = DEFAULT_MPP
"""Microns per pixel of the images the network was trained on (CAMELYON16 level 0). The
exported repository records it (parameter ``model_mpp``) and the client reads it."""
MPP_TOLERANCE: Final = 0.10
"""Relative resolution difference read as "the same": CAMELYON16's two scanners (0.243 and
0.226 um/px) are both read 1:1, so MONAI's map stays exact on them."""
MODEL_MPP_PARAMETER: Final = "model_mpp"
"""Name of the repository config parameter that carries :data:`MODEL_MPP`."""
SLIDE_CLASSIFIER_PARAMETER: Final = "slide_classifier"
"""Name of the detectors' config parameter that carries the fitted slide classifier's JSON
(the text of :data:`SLIDE_CLASSIFIER_FILE`; absent until ``wsi-slide-classifier`` fits one)."""
SLIDE_CLASSIFIER_FILE: Final = "slide_classifier.json"
"""The slide classifier's file at the model repository's root."""

# --- precision ------------------------------------------------------------------------------
PRECISION_PARAMETER: Final = "precision"
"""Repository config parameter of the networks and the ensemble: the arithmetic the served
graph computes in (a fact of the export, read by the client and written to each slide JSON)."""
PRECISIONS: Final = ("fp32", "fp16", "int8")
"""Values of :data:`PRECISION_PARAMETER`: ONNX graphs are fp32 or int8 (QDQ); a TensorRT plan
may also be fp16."""

# --- Triton model repository ----------------------------------------------------------------
CLASSIFIER_MODEL: Final = "tumor_classifier"
TILER_MODEL: Final = "patch_tiler"
ASSEMBLER_MODEL: Final = "grid_assembler"
ENSEMBLE_MODEL: Final = "tumor_detector"
"""The exact mode: the ensemble tiler -> classifier -> assembler (MONAI's map)."""
DENSE_MODEL: Final = "tumor_detector_dense"
"""The dense mode: one ONNX graph, whole regions through the fully convolutional network."""
MODES: Final = ("exact", "dense")
"""``wsi-infer --mode`` values: the exact ensemble (MONAI's map) or the dense model."""

PATCHES_TENSOR: Final = "patches"
"""FP32 [P, 3, 224, 224], normalised: the classifier's input, the tiler's output."""
PROBABILITIES_TENSOR: Final = "probabilities"
"""FP32 [P, 1]: sigmoid of the network's logit, the classifier's output."""
REGIONS_TENSOR: Final = "regions"
"""UINT8 [N, H, W, 3] with H = W = region_size(k): the ensemble's image input."""
CELL_MASK_TENSOR: Final = "cell_mask"
"""BOOL [N, k, k]: which patch centres of each region to classify."""
GRID_TENSOR: Final = "probability_grid"
"""FP32 [N, k, k]: the ensemble's output, 0 where the mask is off."""
