"""The WSI client: tissue mask -> k x k regions -> streamed Triton requests -> outputs.

Importing this package is cheap (no tritonclient, torch or slide backends); the heavy
modules are imported where they are used: :mod:`wsi_tumor.client.runner` runs a cohort. The
``wsi-infer`` command is :mod:`wsi_tumor.infer`, above this package and :mod:`wsi_tumor.cluster`.
"""

from wsi_tumor.client.config import InferConfig
from wsi_tumor.client.grid import Region, plan_regions

__all__ = ["InferConfig", "Region", "plan_regions"]
