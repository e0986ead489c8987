"""The recipe the accuracy benchmark runs, its levers, and where each stage writes.

One seed is one hard dataset (its own training, validation and test slides). On it a
*variant* is the recipe with some levers on or off:

- ``stain``: HED stain augmentation in both training stages (``wsi-train --stain-augment``);
- ``hard_negatives``: one round of mining with the first model (``wsi-mine``) before the
  fine-tuning, whose training list then holds the mined centres;
- ``slide_classifier``: ``wsi-slide-classifier`` fitted on the fine-tuned model's maps of the
  validation slides and scoring each test slide (its AUC beside the map maximum's).

Stages whose inputs are the same are shared: every variant of a seed uses the seed's dataset
and labels, and variants with the same stain setting share the first model and its mining.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from wsi_tumor.export.calibration import DEFAULT_PATCHES, DEFAULT_REGIONS


@dataclass(frozen=True)
class Levers:
    """Which levers a variant turns on."""

    stain: str = "none"
    hard_negatives: bool = False
    slide_classifier: bool = False

    @property
    def model_key(self) -> str:
        """The levers that change the network (the slide classifier only scores)."""
        return f"stain-{self.stain}_{'hn' if self.hard_negatives else 'no-hn'}"

    def describe(self) -> str:
        """One line for the report."""
        parts = [f"stain augmentation {self.stain}" if self.stain != "none" else "no stain aug."]
        parts.append("hard negatives mined" if self.hard_negatives else "no mining")
        parts.append("slide classifier" if self.slide_classifier else "map maximum as score")
        return ", ".join(parts)


RECIPE: Final = Levers(stain="none", hard_negatives=False, slide_classifier=True)
"""The shipped recipe: the levers on by default (each measured as a gain in the ablation:
docs/accuracy.md). Strong stain augmentation and hard-negative mining lowered FROC and AUC in
the paired runs, so they stay available and off."""
BASELINE: Final = Levers()
"""The recipe before this wave: first model, fine-tuning, the map maximum as slide score."""
LEVERS: Final = (
    ("stain augmentation (strong)", Levers(stain="strong")),
    ("hard negatives", Levers(hard_negatives=True)),
    ("slide classifier", Levers(slide_classifier=True)),
)
"""The ablation: each lever alone on top of the baseline, paired with it over seeds."""


@dataclass(frozen=True)
class Sizes:
    """Dataset and training sizes of one run of the benchmark."""

    train: int = 8
    valid: int = 4
    test: int = 10
    preset: str = "hard"
    epochs: int = 2
    steps_per_epoch: int = 30
    finetune_steps: int = 30
    consistency: float = 0.1
    batch_size: int = 4
    valid_steps: int = 10
    workers: int = 2
    calibration_patches: int = DEFAULT_PATCHES
    calibration_regions: int = DEFAULT_REGIONS


QUICK: Final = Sizes(
    train=2, valid=4, test=2, preset="hard-small", epochs=1, steps_per_epoch=2,
    finetune_steps=1, valid_steps=1, calibration_patches=32, calibration_regions=4,
)  # fmt: skip
"""``--quick``: every stage on small slides, for the test suite."""


@dataclass(frozen=True)
class SeedPaths:
    """Where one seed's stages write, under the work directory."""

    root: Path

    @property
    def data(self) -> Path:
        """The seed's hard dataset."""
        return self.root / "data"

    @property
    def labels(self) -> Path:
        """Label CSVs of the dataset's own lists (no mined centres)."""
        return self.root / "labels"

    def base(self, levers: Levers) -> Path:
        """The first model and its mining (shared by variants with the same stain)."""
        return self.root / f"base_stain-{levers.stain}"

    def run(self, levers: Levers) -> Path:
        """The fine-tuned model of a variant and everything scored with it."""
        return self.root / levers.model_key

    def predictions(self, levers: Levers, mode: str) -> Path:
        """``wsi-infer`` outputs on the test slides (``mode``: exact, dense or dense-int8)."""
        return self.run(levers) / f"predictions_{mode}"

    def froc(self, levers: Levers, mode: str) -> Path:
        """``wsi-froc`` outputs for a mode."""
        return self.run(levers) / f"froc_{mode}"
