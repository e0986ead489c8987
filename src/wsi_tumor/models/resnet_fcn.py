"""ResNet18 whose fully connected layer is a 1x1 convolution (the MONAI bundle's network).

The module tree mirrors MONAI's ``TorchVisionFCModel("resnet18", num_classes=1,
use_conv=True)``: ``features`` is torchvision's ResNet18 without its average pool and fully
connected layer, ``pool`` is ``AvgPool2d(7, stride=1)`` and ``fc`` a ``Conv2d(512, 1, 1)``.
The state_dict keys are therefore ``features.*`` and ``fc.*``, so the bundle's
``models/model.pt`` loads with ``strict=True`` and our weights load in MONAI.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

FEATURE_CHANNELS = 512


class TumorResNetFCN(nn.Module):
    """ResNet18 feature extractor, 7x7 average pool and a 1x1 convolution classifier.

    Args:
        num_classes: Output channels of the 1x1 convolution (1: a tumour logit).

    The forward pass maps [N, 3, 224, 224] to logits [N, num_classes, 1, 1]; larger inputs
    give a dense logit map, as a fully convolutional network does.
    """

    def __init__(self, num_classes: int = 1) -> None:
        super().__init__()
        backbone = resnet18(weights=None)
        self.features = nn.Sequential(*list(backbone.children())[:-2])
        self.pool = nn.AvgPool2d(kernel_size=7, stride=1)
        self.fc = nn.Conv2d(FEATURE_CHANNELS, num_classes, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits [N, num_classes, h, w] (h = w = 1 for 224 px patches)."""
        return self.fc(self.pool(self.features(x)))


def build_model(num_classes: int = 1) -> TumorResNetFCN:
    """Build the network with random weights (load a checkpoint or ``--pretrained`` after)."""
    return TumorResNetFCN(num_classes=num_classes)
