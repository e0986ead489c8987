"""The hard synthetic benchmark (``wsi-synth --preset hard``): real CAMELYON16 lesion
shapes on tissue with confounders (lymphocyte-dense regions, germinal centres, folds,
out-of-focus areas, pen marks, a training and a test staining centre)."""

from wsi_tumor.data.hard.config import SMALL, HardConfig, hard_config_from
from wsi_tumor.data.hard.confounders import CONFOUNDERS, Rates
from wsi_tumor.data.hard.generate import generate_hard, write_hard_slide
from wsi_tumor.data.hard.plan import Budget

__all__ = [
    "CONFOUNDERS",
    "SMALL",
    "Budget",
    "HardConfig",
    "Rates",
    "generate_hard",
    "hard_config_from",
    "write_hard_slide",
]
