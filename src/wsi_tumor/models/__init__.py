"""Network definitions (import pulls in torch)."""

from wsi_tumor.models.resnet_fcn import TumorResNetFCN, build_model

__all__ = ["TumorResNetFCN", "build_model"]
