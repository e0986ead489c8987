"""wsi-tumor: CAMELYON16 metastasis detection served through Triton Inference Server.

Importing the package is cheap: no torch, cuCIM or tritonclient is pulled in here.
"""

__version__ = "0.1.0"
