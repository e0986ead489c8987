"""Numpy-only serving logic used by the Triton model.py adapters, and the local server.

The request limits the client must respect live in :mod:`wsi_tumor.serving.limits` and are
re-exported here (importing this package pulls in no numpy, torch or tritonclient).
"""

from wsi_tumor.serving.limits import MAX_PATCHES_PER_REQUEST, max_regions_per_request

__all__ = ["MAX_PATCHES_PER_REQUEST", "max_regions_per_request"]
