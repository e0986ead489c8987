"""Export: checkpoint -> ONNX (dynamic batch) -> parity check -> TensorRT plan -> repository.

Submodules import torch; importing this package alone does not.
"""
