"""The training configuration: a frozen dataclass from defaults < YAML file < flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, get_args

import yaml

from wsi_tumor.commandline import add_dataclass_flags, field_types, make_parser, option
from wsi_tumor.errors import ConfigError
from wsi_tumor.fileio import write_text
from wsi_tumor.slide import READER_CHOICES
from wsi_tumor.training.grid import DENSE_LABELS, GRID_SPLITS, OBJECTIVES, GridSplit, Objective
from wsi_tumor.training.transforms import STAIN_STRENGTHS

DEVICES: Final = ("auto", "cpu", "cuda")
TRAIN_CSV: Final = "training.csv"
VALID_CSV: Final = "validation.csv"
IMAGES_DIR: Final = "images"
CONFIG_YAML: Final = "config.yaml"
CONFIG_JSON: Final = "config.json"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; written next to and into every checkpoint.

    Defaults follow the MONAI bundle's ``train.json`` (4 epochs, 128 regions per batch,
    Novograd lr 1e-3, seed 15, 8 workers, cuCIM). Each field with a help text is a flag.
    """

    labels_train: Path = field(metadata={"help": "training label CSV (slide,x,y,l0..l8)"})
    labels_valid: Path = field(metadata={"help": "validation label CSV"})
    images: Path = field(metadata={"help": "directory of slides named <slide>.tif"})
    out: Path = field(metadata={"help": "output dir: checkpoints, config, TensorBoard logs"})
    epochs: int = option(4, "training epochs")
    batch_size: int = option(128, "regions per step and process (x9 patches)")
    lr: float = option(1e-3, "Novograd learning rate")
    seed: int = option(15, "random seed")
    workers: int = option(8, "DataLoader worker processes")
    reader: str = option("auto", "slide reader (auto: per format)", choices=READER_CHOICES)
    mpp: float | None = option(
        None, "level-0 um/px of every slide whose file does not state it (default: the file's)"
    )
    grid_split: GridSplit = option(
        "centre",
        "patch placement: centre crops of the cells, or MONAI GridSplit spacing",
        choices=GRID_SPLITS,
    )
    objective: Objective = option(
        "patch",
        "patch: the nine patches of a region (MONAI's recipe); dense: the region's 736 px centre "
        "through the network whole, as --mode dense infers; mixed: both, to fine-tune one "
        "checkpoint for equal exact and dense maps (needs --grid-split centre)",
        choices=OBJECTIVES,
    )
    consistency: float = option(
        0.0,
        "with --objective mixed: weight of the squared difference between the whole region's "
        "logits and its patches' at the labelled cells, pulling the dense map onto the exact "
        "one (0: off)",
    )
    dense_labels: str = option(
        "grid",
        "with --objective dense or mixed: grid labels the crop's nine grid cells (the label "
        "CSV's); cells labels every one of its 9 x 9 dense cells from the tumour polygons of "
        "--annotations (nine times the supervision from the same pixels)",
        choices=DENSE_LABELS,
    )
    annotations: Path | None = option(
        None, "tumour polygons (<slide>.json NCRF or .xml ASAP) for --dense-labels cells"
    )
    stain_augment: str = option(
        "none",
        "HED stain augmentation before the bundle's ColorJitter: perturb each patch's "
        "haematoxylin, eosin and DAB concentrations in optical-density space (light: scale "
        "+-5 %%, strong: +-20 %%; see docs/training.md)",
        choices=STAIN_STRENGTHS,
    )
    resume: Path | None = option(None, "training checkpoint to continue from")
    init_from: Path | None = option(None, "weights to start from (ours or the bundle's model.pt)")
    pretrained: bool = option(False, "ImageNet ResNet18 weights from the local torch hub cache")
    amp: bool | None = option(
        None,
        "mixed precision, fp16 on CUDA and bf16 on the CPU (default: on with CUDA and on CPUs "
        "with native bf16, AVX512-BF16 or AMX; off elsewhere)",
    )
    device: str = option("auto", "training device", choices=DEVICES)
    max_steps_per_epoch: int | None = option(None, "bound each training epoch (CPU runs)")
    max_valid_steps: int | None = option(None, "bound each validation pass")
    quiet: bool = option(False, "no progress bar, warnings only")

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-friendly dict (paths as strings)."""
        return {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()
        }

    def write(self, directory: Path) -> None:
        """Write ``config.yaml`` and ``config.json`` into ``directory``."""
        data = self.to_dict()
        write_text(directory / CONFIG_YAML, yaml.safe_dump(data, sort_keys=False))
        write_text(directory / CONFIG_JSON, json.dumps(data, indent=2) + "\n")


_FIELDS: Final = {f.name: f for f in fields(TrainConfig)}
_TYPES: Final = field_types(TrainConfig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the training flags; every default is None so YAML and defaults can fill in."""
    parser.add_argument(
        "dataset", nargs="?", type=Path, default=None,
        help=f"dataset dir: defaults --labels-train DIR/{TRAIN_CSV}, --labels-valid "
        f"DIR/{VALID_CSV}, --images DIR/{IMAGES_DIR}",
    )  # fmt: skip
    parser.add_argument(
        "--config", type=Path, help="YAML file of defaults (keys = long flag names)"
    )
    add_dataclass_flags(parser, TrainConfig, defaults=False)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping of config keys (dashes or underscores).

    Raises:
        ConfigError: naming the file for a missing file, bad YAML or an unknown key.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of keys, found {type(data).__name__}")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _FIELDS and name != "dataset":
            raise ConfigError(f"{path}: unknown key {key!r}")
        out[name] = value
    return out


def _coerce(name: str, value: Any, source: str) -> Any:
    """``value`` (from YAML or a flag) as the type of field ``name``."""
    if value is None:
        return None
    kind = Path if name == "dataset" else _TYPES[name]
    try:
        if kind is Path:
            return Path(value)
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is int:
            if isinstance(value, bool) or int(value) != value:
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name}: invalid value {value!r}") from None
    return value


def _validate(values: dict[str, Any], source: str) -> None:
    for name in ("labels_train", "labels_valid", "images", "out"):
        if values.get(name) is None:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{source}: {flag} is required (or give a dataset dir)")
    for name in ("epochs", "batch_size"):
        if values[name] < 1:
            raise ConfigError(f"{source}: {name} must be >= 1, got {values[name]}")
    for name in ("max_steps_per_epoch", "max_valid_steps"):
        if values.get(name) is not None and values[name] < 1:
            raise ConfigError(f"{source}: {name} must be >= 1, got {values[name]}")
    if values["workers"] < 0:
        raise ConfigError(f"{source}: workers must be >= 0, got {values['workers']}")
    if not values["lr"] > 0:
        raise ConfigError(f"{source}: lr must be > 0, got {values['lr']}")
    for name, choices in (
        ("reader", READER_CHOICES),
        ("device", DEVICES),
        ("grid_split", get_args(GridSplit)),
        ("objective", OBJECTIVES),
        ("stain_augment", STAIN_STRENGTHS),
        ("dense_labels", DENSE_LABELS),
    ):
        if values[name] not in choices:
            raise ConfigError(f"{source}: {name} must be one of {choices}, got {values[name]!r}")
    if not values["consistency"] >= 0:
        raise ConfigError(f"{source}: consistency must be >= 0, got {values['consistency']}")
    if values["consistency"] > 0 and values["objective"] != "mixed":
        raise ConfigError(f"{source}: --consistency needs --objective mixed")
    if values["dense_labels"] == "cells" and values.get("annotations") is None:
        raise ConfigError(f"{source}: --dense-labels cells needs --annotations")
    if values["dense_labels"] == "cells" and values["objective"] == "patch":
        raise ConfigError(f"{source}: --dense-labels cells needs --objective dense or mixed")
    if values.get("resume") and values.get("init_from"):
        raise ConfigError(f"{source}: give --resume or --init-from, not both")


def resolve(args: argparse.Namespace) -> TrainConfig:
    """Merge dataclass defaults < ``--config`` YAML < flags into a TrainConfig.

    Raises:
        ConfigError: naming the file or flag at fault.
    """
    values: dict[str, Any] = {
        name: f.default for name, f in _FIELDS.items() if f.default is not dataclasses.MISSING
    }
    source = "command line"
    if args.config is not None:
        source = str(args.config)
        for key, value in read_yaml(args.config).items():
            values[key] = _coerce(key, value, source)
    for key, value in vars(args).items():
        if key != "config" and value is not None:
            values[key] = _coerce(key, value, "command line")
    dataset = values.pop("dataset", None)
    if dataset is not None:
        if values.get("labels_train") is None:
            values["labels_train"] = dataset / TRAIN_CSV
        if values.get("labels_valid") is None:
            values["labels_valid"] = dataset / VALID_CSV
        if values.get("images") is None:
            values["images"] = dataset / IMAGES_DIR
    _validate(values, source)
    return TrainConfig(**values)


def build_parser(prog: str = "wsi-train") -> argparse.ArgumentParser:
    """The ``wsi-train`` argument parser."""
    parser = make_parser(prog, "Train the tumour classifier (single process, or under torchrun).")
    add_arguments(parser)
    return parser


def config_from_argv(argv: list[str] | None) -> TrainConfig:
    """Parse ``argv`` and resolve the configuration (see :func:`resolve`)."""
    return resolve(build_parser().parse_args(argv))
