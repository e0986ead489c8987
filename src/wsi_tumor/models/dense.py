"""Dense (whole-region) inference with the fully convolutional ResNet18.

A region of side ``contract.region_size(k) = 224 + (k - 1) * 64`` px run through the
network's ``features`` gives a feature map of side ``2k + 5`` (stride 32); a 7 x 7 average
pool at stride 2 over it lands exactly on the k x k grid of 64 px cells, because the patch
of cell j starts ``64 j`` px = ``2 j`` feature cells into the region. The 1x1 convolution
``fc`` then gives one logit per cell. This equals the exact per-patch pass except near
patch borders, where the exact pass sees zero padding and the dense pass sees the
neighbouring tissue (ScanNet's observation).

:class:`DenseTumorNet` wraps a trained :class:`TumorResNetFCN` with the serving contract of
the dense model: UINT8 regions [N, H, W, 3] and BOOL cell mask [N, k, k] in, FP32
probability grid [N, k, k] out (0 where the mask is off), normalisation inside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsi_tumor import contract
from wsi_tumor.models.resnet_fcn import TumorResNetFCN

FEATURE_STRIDE = 32
"""Input pixels per output of the network's features (ResNet18's stride)."""
POOL_KERNEL = contract.PATCH_SIZE // FEATURE_STRIDE
"""Feature cells one 224 px patch spans (7)."""
POOL_STRIDE = contract.PATCH_STRIDE // FEATURE_STRIDE
"""Feature cells between neighbouring patch centres (2)."""


def normalise_nhwc(regions: torch.Tensor) -> torch.Tensor:
    """UINT8 [N, H, W, 3] -> normalised FP32 [N, 3, H, W], the arithmetic of contract.normalise."""
    lo, hi = contract.INTENSITY_IN
    out_lo, out_hi = contract.INTENSITY_OUT
    x = regions.permute(0, 3, 1, 2).to(torch.float32)
    return (x - lo) / (hi - lo) * (out_hi - out_lo) + out_lo


def dense_logits(model: TumorResNetFCN, images: torch.Tensor) -> torch.Tensor:
    """Logits [N, k, k] of normalised regions [N, 3, H, W] with H = W = region_size(k)."""
    features = model.features(images)
    pooled = F.avg_pool2d(features, kernel_size=POOL_KERNEL, stride=POOL_STRIDE)
    return model.fc(pooled)[:, 0]


class DenseTumorNet(nn.Module):
    """The dense model's contract around a trained network.

    Args:
        model: The trained ResNet18-FCN (its weights are shared, not copied).
    """

    def __init__(self, model: TumorResNetFCN) -> None:
        super().__init__()
        self.model = model

    def forward(self, regions: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
        """Probability grid [N, k, k] of UINT8 regions [N, H, W, 3], 0 where the mask is off."""
        probabilities = torch.sigmoid(dense_logits(self.model, normalise_nhwc(regions)))
        return probabilities * cell_mask.to(probabilities.dtype)
