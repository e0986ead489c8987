"""Per-patch preprocessing: the MONAI bundle's training augmentation and the validation path.

The bundle applies ``GridSplitd`` first, so every later transform of its ``Compose`` runs on
each of the nine patches separately, with its own random draws. In the bundle's order:

1. ``ColorJitter(brightness=.25, contrast=.75, saturation=.25, hue=.04)`` on the uint8 patch;
2. ``RandFlip(prob=.5)`` with ``spatial_axis=None``: both axes flipped together;
3. ``RandRotate90(prob=.5, max_k=3)``: k in {1, 2, 3} quarter turns;
4. ``RandZoom(prob=.5, min_zoom=.9, max_zoom=1.1)``: area interpolation, then centre crop or
   edge padding back to 224 x 224;
5. ``ScaleIntensityRange(0, 255, -1, 1)`` (:func:`wsi_tumor.contract.normalise`).

Zoom and intensity scaling are both linear, so scaling before zooming (as done here, to keep
one float conversion) gives the same values up to float rounding.

The ``dense`` and ``mixed`` objectives augment the whole dense crop instead
(:class:`RegionAugment`): the same jitter, and the flip and quarter turns applied to the crop
and its 3 x 3 label grid together. Zoom is left out: it would move the labelled cells off
the dense grid.

Stain augmentation (``wsi-train --stain-augment light|strong``, off by default) comes before
the jitter: :class:`HedJitter` scales and shifts each patch's haematoxylin, eosin and DAB
concentrations in optical-density space (Tellez et al., Medical Image Analysis 58, 2019), with
scikit-image's colour-deconvolution matrices.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from skimage.color import hed_from_rgb, rgb_from_hed
from torchvision.transforms import ColorJitter

from wsi_tumor.contract import PATCH_SIZE, normalise

JITTER = {"brightness": 0.25, "contrast": 0.75, "saturation": 0.25, "hue": 0.04}
FLIP_PROB = 0.5
ROT90_PROB = 0.5
MAX_K = 3
ZOOM_PROB = 0.5
ZOOM_RANGE = (0.9, 1.1)
STAIN_STRENGTHS = ("none", "light", "strong")
HED_RANGES = {"light": (0.05, 0.01), "strong": (0.2, 0.05)}
"""Strength -> (scale, shift): each stain's optical density becomes ``od * a + b`` with
``a`` uniform in [1 - scale, 1 + scale] and ``b`` uniform in [-shift, shift] (natural-log OD
units; tissue is about 0.1 to 1.5). Tellez et al.'s HED-light and HED-strong scale ranges;
the shifts are kept small because they also tint the glass."""
_OPTICAL_DENSITY = -np.log(np.maximum(np.arange(256, dtype=np.float32), 1.0) / 255.0)
"""uint8 value -> optical density (0 read as 1, as scikit-image's floor of 1e-6 would make
it a huge density)."""


def to_normalised_tensor(patches: npt.NDArray[np.uint8]) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1] (the validation path)."""
    return torch.from_numpy(np.ascontiguousarray(normalise(patches).transpose(0, 3, 1, 2)))


def _coin(prob: float) -> bool:
    return bool(torch.rand(()) < prob)


def zoom_keep_size(patch: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom a (C, H, W) float patch by ``factor`` with area interpolation, keep its size.

    A larger result is centre-cropped, a smaller one padded by repeating its edge pixels
    (MONAI ``Zoom(mode="area", padding_mode="edge", keep_size=True)``).
    """
    size = patch.shape[-2:]
    zoomed = F.interpolate(
        patch.unsqueeze(0), scale_factor=factor, mode="area", recompute_scale_factor=True
    )
    out_h, out_w = zoomed.shape[-2:]
    pad_h, pad_w = size[0] - out_h, size[1] - out_w
    if pad_h > 0 or pad_w > 0:
        ph, pw = max(pad_h, 0), max(pad_w, 0)
        zoomed = F.pad(zoomed, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
    out_h, out_w = zoomed.shape[-2:]
    top, left = (out_h - size[0]) // 2, (out_w - size[1]) // 2
    return zoomed[0, :, top : top + size[0], left : left + size[1]]


def flip_rotate(*images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``RandFlip`` (both axes) then ``RandRotate90``, the same draws for every tensor given."""
    if _coin(FLIP_PROB):
        images = tuple(torch.flip(t, dims=(-2, -1)) for t in images)
    if _coin(ROT90_PROB):
        k = int(torch.randint(1, MAX_K + 1, ()))
        images = tuple(torch.rot90(t, k, dims=(-2, -1)) for t in images)
    return images


class HedJitter:
    """Random scale and shift of the H, E and DAB concentrations of a (3, H, W) uint8 image.

    The concentrations come from the optical density ``-ln(rgb)`` through scikit-image's
    ``hed_from_rgb`` matrix and go back through ``rgb_from_hed``, unclipped in between, so
    scale 1 and shift 0 give the image back (to uint8 rounding). Draws use torch's RNG.
    """

    def __init__(self, strength: str) -> None:
        if strength not in HED_RANGES:
            raise ValueError(f"unknown stain strength {strength!r}; choose from {HED_RANGES}")
        self.scale, self.shift = HED_RANGES[strength]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 -> (3, H, W) uint8 with perturbed stain concentrations."""
        a = 1.0 + self.scale * (2.0 * torch.rand(3, dtype=torch.float64) - 1.0)
        b = self.shift * (2.0 * torch.rand(3, dtype=torch.float64) - 1.0)
        # stains = od @ hed_from_rgb; density = (stains * a + b) @ rgb_from_hed, folded into
        # one 3 x 3 matrix and one offset (column vectors: channels first)
        matrix = (hed_from_rgb * a.numpy()) @ rgb_from_hed
        offset = b.numpy() @ rgb_from_hed
        od = _OPTICAL_DENSITY[image.numpy().reshape(3, -1)]
        density = matrix.T.astype(np.float32) @ od + offset.astype(np.float32)[:, None]
        out = np.exp(-density, out=density)
        out = np.clip(out * 255.0 + 0.5, 0.0, 255.0, out=out).astype(np.uint8)
        return torch.from_numpy(out.reshape(image.shape))


def _colour(stain: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Stain augmentation (unless ``none``) followed by the bundle's ColorJitter."""
    jitter = ColorJitter(**JITTER)
    if stain == "none":
        return jitter
    hed = HedJitter(stain)
    return lambda image: jitter(hed(image))


class TrainAugment:
    """Augment nine uint8 patches independently, then normalise; draws use torch's RNG."""

    def __init__(self, stain: str = "none") -> None:
        self.colour = _colour(stain)

    def augment_one(self, patch: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 -> (3, H, W) float32 in about [-1, 1], augmented."""
        (patch,) = flip_rotate(self.colour(patch))
        out = torch.from_numpy(normalise(patch.contiguous().numpy()))
        if _coin(ZOOM_PROB):
            lo, hi = ZOOM_RANGE
            factor = lo + (hi - lo) * float(torch.rand(()))
            out = zoom_keep_size(out, factor)
        return out

    def __call__(self, patches: npt.NDArray[np.uint8]) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, H, W) float32."""
        chw = torch.from_numpy(np.ascontiguousarray(patches.transpose(0, 3, 1, 2)))
        out = torch.stack([self.augment_one(p) for p in chw])
        if out.shape[-2:] != (PATCH_SIZE, PATCH_SIZE):
            raise ValueError(f"augmented patch has shape {tuple(out.shape)}")
        return out


class RegionAugment:
    """Augment one uint8 crop and its label grid with the same draws, then normalise."""

    def __init__(self, stain: str = "none") -> None:
        self.colour = _colour(stain)

    def __call__(
        self, crop: npt.NDArray[np.uint8], grid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(H, W, 3) uint8 crop, (3, 3) labels -> (3, H, W) float32 and the labels moved alike."""
        image = self.colour(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))))
        image, grid = flip_rotate(image, grid)
        return torch.from_numpy(normalise(image.contiguous().numpy())), grid.contiguous()
