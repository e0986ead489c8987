"""Triton Python-backend entry point of patch_tiler.

The adapter is wsi_tumor.serving.triton_models.patch_tiler.
"""

from wsi_tumor.serving.triton_models.patch_tiler import TritonPythonModel

__all__ = ["TritonPythonModel"]
