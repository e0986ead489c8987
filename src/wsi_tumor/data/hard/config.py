"""Arguments of the hard preset (``wsi-synth --preset hard`` and ``hard-small``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_tumor.data.hard.confounders import CONFOUNDERS, ConfounderKind, Rates
from wsi_tumor.data.hard.painter import TEXTURE_SIDE
from wsi_tumor.data.hard.plan import Budget
from wsi_tumor.data.synthetic import SynthConfig
from wsi_tumor.errors import ConfigError

TEST_BUDGET = Budget(tissue_mm2=0.4, macro_max_mm2=1.0, micro_max_mm2=0.3, max_micro=3, max_itc=6)
"""Test slides: small sections (inference cost is per tissue cell), the smaller real
macro-metastases (4 shapes, 2.0-2.6 mm long, 0.66-0.93 mm^2) and micro-metastases up to 0.3 mm^2."""
TRAIN_BUDGET = Budget(tissue_mm2=1.2, macro_max_mm2=2.0, micro_max_mm2=2.0, max_micro=4, max_itc=8)
"""Training and validation slides: only generation time grows with them."""
SMALL_BUDGET = Budget(
    tissue_mm2=0.12, macro_max_mm2=1.0, micro_max_mm2=0.03, max_micro=2, max_itc=3
)
"""Small sections and small micro-metastases: a slide renders in seconds."""
SMALL: dict[str, Any] = {
    "train_budget": SMALL_BUDGET,
    "test_budget": SMALL_BUDGET,
    "macro_share": 0.0,
    "texture_side": 256,
}
""":class:`HardConfig` changes of ``--preset hard-small``: the hard preset's confounders and
lesion shapes on small slides, for tests and ``make accuracy --quick`` (not calibrated)."""


@dataclass(frozen=True)
class HardConfig:
    """Arguments of one hard-preset run.

    Attributes:
        out: Output root.
        train: Training slides (tumour and normal alternate, first tumour).
        valid: Validation slides (likewise).
        test: Test slides (odd numbers tumour, even normal: half normal).
        seed: Random seed; the same arguments give the same files.
        coords: Patch centres per training list.
        valid_coords: Patch centres per validation list.
        quiet: No progress bars.
        confounders: Confounders painted (default all, see
            :data:`~wsi_tumor.data.hard.confounders.CONFOUNDERS`); without ``stain``
            test-centre slides are stained like training-centre ones.
        test_centre_share: Share of test slides (tumour and normal alike) from the test
            centre; the rest and every training/validation slide come from the training
            centre.
        stain_shift: How far the test centre's stain is from the training centre's (0-1).
        grade: Range of the tumour grade (0 = the easy preset's carcinoma, 1 = lymphocyte-
            like); each tumour slide draws one.
        rates: Confounder occurrence rates.
        train_budget: Sizes of training and validation slides.
        test_budget: Sizes of test slides.
        macro_share: Share of tumour slides whose biggest lesion is a macro-metastasis;
            None = the source's (46 of 110 CAMELYON16 training slides).
        texture_side: Side of the periodic textures (smaller renders faster; tests).
    """

    out: Path
    train: int = 8
    valid: int = 2
    test: int = 8
    seed: int = 0
    coords: int = 300
    valid_coords: int = 60
    quiet: bool = False
    confounders: frozenset[ConfounderKind] = frozenset(CONFOUNDERS)
    test_centre_share: float = 0.5
    stain_shift: float = 1.0
    grade: tuple[float, float] = (0.0, 0.6)
    rates: Rates = field(default_factory=Rates)
    train_budget: Budget = TRAIN_BUDGET
    test_budget: Budget = TEST_BUDGET
    macro_share: float | None = None
    texture_side: int = TEXTURE_SIDE

    def __post_init__(self) -> None:
        if min(self.train, self.valid, self.test, self.coords, self.valid_coords) < 0:
            raise ConfigError("slide and coordinate counts must not be negative")
        unknown = set(self.confounders) - set(CONFOUNDERS)
        if unknown:
            raise ConfigError(
                f"unknown confounder(s) {sorted(unknown)}; known: {', '.join(CONFOUNDERS)}"
            )
        if not 0.0 <= self.test_centre_share <= 1.0:
            raise ConfigError(f"test_centre_share must be in [0, 1], got {self.test_centre_share}")
        if not 0.0 <= self.stain_shift <= 1.0:
            raise ConfigError(f"stain_shift must be in [0, 1], got {self.stain_shift}")
        if self.macro_share is not None and not 0.0 <= self.macro_share <= 1.0:
            raise ConfigError(f"macro_share must be in [0, 1], got {self.macro_share}")
        if self.texture_side < 64 or self.texture_side & (self.texture_side - 1):
            raise ConfigError(f"texture_side must be a power of two >= 64, got {self.texture_side}")
        lo, hi = self.grade
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"grade must be a range inside [0, 1], got {self.grade}")


def hard_config_from(synth: SynthConfig, **changes: Any) -> HardConfig:
    """A :class:`HardConfig` with the output, counts, seed and quiet flag of ``wsi-synth``.

    ``size`` and ``tumor_fraction`` do not apply (slide sizes follow the lesions and the
    split budgets; tumour slides alternate with normal ones).
    """
    return HardConfig(
        out=Path(synth.out),
        train=synth.train,
        valid=synth.valid,
        test=synth.test,
        seed=synth.seed,
        coords=synth.coords,
        valid_coords=synth.valid_coords,
        quiet=synth.quiet,
        **changes,
    )
