"""FROC evaluation with the CAMELYON16 protocol, and the NMS the client shares.

Cheap to import: numpy only; scipy/scikit-image/tifffile load with the submodules that use
them (``masks``, ``evaluate``).
"""

from __future__ import annotations

from wsi_tumor.evaluation.froc import EVAL_FPS, SlideResult, evaluate_slide, froc_curve, froc_score
from wsi_tumor.evaluation.nms import nms, nms_monai, read_detections, write_detections

__all__ = [
    "EVAL_FPS",
    "SlideResult",
    "evaluate_slide",
    "froc_curve",
    "froc_score",
    "nms",
    "nms_monai",
    "read_detections",
    "write_detections",
]
