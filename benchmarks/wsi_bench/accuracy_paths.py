"""Where each stage of the accuracy benchmark writes, under its work directory."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AccuracyPaths:
    """Where each stage writes, under the work directory."""

    root: Path

    @property
    def data(self) -> Path:
        """The hard dataset."""
        return self.root / "data"

    @property
    def checkpoints(self) -> Path:
        """Training output."""
        return self.root / "checkpoints"

    @property
    def finetuned(self) -> Path:
        """Fine-tuning output."""
        return self.root / "finetuned"

    @property
    def repository(self) -> Path:
        """The exported model repository."""
        return self.root / "model_repository"

    def predictions(self, mode: str) -> Path:
        """wsi-infer's outputs of one mode."""
        return self.root / f"predictions_{mode}"

    def froc(self, mode: str) -> Path:
        """wsi-froc's outputs of one mode."""
        return self.root / f"froc_{mode}"
