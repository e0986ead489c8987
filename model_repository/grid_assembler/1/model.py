"""Triton Python-backend entry point of grid_assembler.

The adapter is wsi_tumor.serving.triton_models.grid_assembler.
"""

from wsi_tumor.serving.triton_models.grid_assembler import TritonPythonModel

__all__ = ["TritonPythonModel"]
