"""The training configuration: a frozen dataclass from defaults < YAML file < flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final, get_args

import yaml

from wsi_tumor.errors import ConfigError
from wsi_tumor.slide import READERS
from wsi_tumor.training.grid import GRID_SPLITS, GridSplit

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
    Novograd lr 1e-3, seed 15, 8 workers, cuCIM).
    """

    labels_train: Path
    labels_valid: Path
    images: Path
    out: Path
    epochs: int = 4
    batch_size: int = 128
    """Regions per step and per process; each region gives 9 patches."""
    lr: float = 1e-3
    seed: int = 15
    workers: int = 8
    reader: str = "cucim"
    grid_split: GridSplit = "centre"
    resume: Path | None = None
    init_from: Path | None = None
    pretrained: bool = False
    amp: bool | None = None
    """None: on when training on CUDA, off on the CPU."""
    device: str = "auto"
    max_steps_per_epoch: int | None = None
    max_valid_steps: int | None = None
    quiet: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-friendly dict (paths as strings)."""
        return {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()
        }

    def write(self, directory: Path) -> None:
        """Write ``config.yaml`` and ``config.json`` into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        (directory / CONFIG_YAML).write_text(yaml.safe_dump(data, sort_keys=False))
        (directory / CONFIG_JSON).write_text(json.dumps(data, indent=2) + "\n")


_FIELDS: Final = {f.name: f for f in fields(TrainConfig)}
_PATH_KEYS: Final = {"labels_train", "labels_valid", "images", "out", "resume", "init_from"}
_OPTIONAL_INT: Final = {"max_steps_per_epoch", "max_valid_steps"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the training flags; every default is None so YAML and defaults can fill in."""
    a = parser.add_argument
    a("dataset", nargs="?", type=Path, default=None,
      help=f"dataset dir: defaults --labels-train DIR/{TRAIN_CSV}, --labels-valid "
           f"DIR/{VALID_CSV}, --images DIR/{IMAGES_DIR}")
    a("--config", type=Path, help="YAML file of defaults (keys = long flag names)")
    a("--labels-train", type=Path, help="training label CSV (slide,x,y,l0..l8)")
    a("--labels-valid", type=Path, help="validation label CSV")
    a("--images", type=Path, help="directory of slides named <slide>.tif")
    a("--out", type=Path, help="output dir: checkpoints, config, TensorBoard logs")
    a("--epochs", type=int)
    a("--batch-size", type=int, help="regions per step and process (x9 patches)")
    a("--lr", type=float)
    a("--seed", type=int)
    a("--workers", type=int, help="DataLoader worker processes")
    a("--reader", choices=READERS)
    a("--grid-split", choices=GRID_SPLITS,
      help="patch placement: centre crops of the cells, or MONAI GridSplit spacing")
    a("--resume", type=Path, help="training checkpoint to continue from")
    a("--init-from", type=Path, help="weights to start from (ours or the bundle's model.pt)")
    a("--pretrained", action=argparse.BooleanOptionalAction, default=None,
      help="ImageNet ResNet18 weights from the local torch hub cache")
    a("--amp", action=argparse.BooleanOptionalAction, default=None,
      help="mixed precision (default: on with CUDA, off on the CPU)")
    a("--device", choices=DEVICES)
    a("--max-steps-per-epoch", type=int, help="bound each training epoch (CPU runs)")
    a("--max-valid-steps", type=int, help="bound each validation pass")
    a("--quiet", action=argparse.BooleanOptionalAction, default=None,
      help="no progress bar, warnings only")


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
    if value is None:
        return None
    if name in _PATH_KEYS or name == "dataset":
        return Path(value)
    try:
        if name in {"epochs", "batch_size", "seed", "workers"} | _OPTIONAL_INT:
            if isinstance(value, bool) or int(value) != value:
                raise ValueError
            return int(value)
        if name == "lr":
            return float(value)
        if name in {"pretrained", "amp", "quiet"} and not isinstance(value, bool):
            raise ValueError
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
    for name in _OPTIONAL_INT:
        if values.get(name) is not None and values[name] < 1:
            raise ConfigError(f"{source}: {name} must be >= 1, got {values[name]}")
    if values["workers"] < 0:
        raise ConfigError(f"{source}: workers must be >= 0, got {values['workers']}")
    if not values["lr"] > 0:
        raise ConfigError(f"{source}: lr must be > 0, got {values['lr']}")
    for name, choices in (("reader", READERS), ("device", DEVICES),
                          ("grid_split", get_args(GridSplit))):
        if values[name] not in choices:
            raise ConfigError(f"{source}: {name} must be one of {choices}, got {values[name]!r}")
    if values.get("resume") and values.get("init_from"):
        raise ConfigError(f"{source}: give --resume or --init-from, not both")


def resolve(args: argparse.Namespace) -> TrainConfig:
    """Merge dataclass defaults < ``--config`` YAML < flags into a TrainConfig.

    Raises:
        ConfigError: naming the file or flag at fault.
    """
    values: dict[str, Any] = {
        f.name: f.default for f in _FIELDS.values() if f.default is not dataclasses.MISSING
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


def config_from_argv(argv: Sequence[str] | None, prog: str = "wsi-train") -> TrainConfig:
    """Parse ``argv`` and resolve the configuration (see :func:`resolve`)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    add_arguments(parser)
    return resolve(parser.parse_args(argv))
