"""``make demo``: the main job end to end on a synthetic CAMELYON16-style dataset.

Each stage runs as its own console script (the commands a user would type), in order:
``wsi-synth`` -> ``wsi-labels`` -> ``wsi-train`` -> ``wsi-export`` -> ``wsi-infer`` (which
starts the local tritonserver itself) -> ``wsi-froc``. The run leaves everything under
``--out`` (default ``demo_output/``) with a ``SUMMARY.md`` that links the outputs and gives the
timings; the model repository is exported to ``--out``/model_repository so the committed
``model_repository/`` (NVIDIA-container layout) is left untouched.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsi_tumor import contract
from wsi_tumor.commandline import make_parser, run_command
from wsi_tumor.slide import READER_CHOICES
from wsi_tumor.stages import Stage, console_script, run_stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo, chosen to finish in under 10 minutes on a slow 2-core runner (the
    classifier at about 45 patches/s) and about 5 on a fast one (about 120): see README."""

    out: Path = Path("demo_output")
    size: int = 6144
    train_slides: int = 6
    valid_slides: int = 2
    test_slides: int = 4
    train_coords: int = 300
    valid_coords: int = 60
    epochs: int = 2
    batch_size: int = 4
    steps_per_epoch: int = 30
    valid_steps: int = 10
    workers: int = 2
    seed: int = 0
    reader: str = "auto"
    mode: str = "dense"
    quiet: bool = False


@dataclass
class DemoPaths:
    """Where each stage writes, under the demo's output directory."""

    root: Path
    data: Path = field(init=False)
    checkpoints: Path = field(init=False)
    repository: Path = field(init=False)
    predictions: Path = field(init=False)
    froc: Path = field(init=False)

    def __post_init__(self) -> None:
        self.data = self.root / "data"
        self.checkpoints = self.root / "checkpoints"
        self.repository = self.root / "model_repository"
        self.predictions = self.root / "predictions"
        self.froc = self.root / "froc"


def plan(config: DemoConfig, paths: DemoPaths) -> list[Stage]:
    """The demo's commands, in order."""
    quiet = ["--quiet"] if config.quiet else []
    test_slides = [
        str(paths.data / "images" / f"test_{i:03d}.tif") for i in range(1, config.test_slides + 1)
    ]
    return [
        Stage(
            "generate the synthetic dataset",
            [
                console_script("wsi-synth"),
                str(paths.data),
                "--train",
                str(config.train_slides),
                "--valid",
                str(config.valid_slides),
                "--test",
                str(config.test_slides),
                "--size",
                str(config.size),
                "--seed",
                str(config.seed),
                "--coords",
                str(config.train_coords),
                "--valid-coords",
                str(config.valid_coords),
                *quiet,
            ],
        ),
        Stage(
            "write the training labels",
            [
                console_script("wsi-labels"),
                str(paths.data),
                "--reader",
                config.reader,
                *quiet,
            ],
        ),
        Stage(
            "train the ResNet18-FCN",
            [
                console_script("wsi-train"),
                str(paths.data),
                "--out",
                str(paths.checkpoints),
                "--epochs",
                str(config.epochs),
                "--batch-size",
                str(config.batch_size),
                "--max-steps-per-epoch",
                str(config.steps_per_epoch),
                "--max-valid-steps",
                str(config.valid_steps),
                "--workers",
                str(config.workers),
                "--seed",
                str(config.seed),
                "--reader",
                config.reader,
                *quiet,
            ],
        ),
        Stage(
            "export to ONNX and the Triton repository",
            [
                console_script("wsi-export"),
                "--checkpoint",
                str(paths.checkpoints / "best.pt"),
                "--repository",
                str(paths.repository),
                *quiet,
            ],
        ),
        Stage(
            "infer the test slides through a local tritonserver",
            [
                console_script("wsi-infer"),
                *test_slides,
                "--out",
                str(paths.predictions),
                "--model-repository",
                str(paths.repository),
                "--reader",
                config.reader,
                "--mode",
                config.mode,
                *quiet,
            ],
        ),
        Stage(
            "score FROC (CAMELYON16 protocol)",
            [
                console_script("wsi-froc"),
                "--detections",
                str(paths.predictions),
                "--ground-truth",
                str(paths.data / "masks"),
                "--images",
                str(paths.data / "images"),
                "--out",
                str(paths.froc),
                *quiet,
            ],
        ),
    ]


def _read_json(path: Path) -> dict[str, Any]:
    with open(path) as handle:
        result: dict[str, Any] = json.load(handle)
        return result


def _link(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    return f"[{rel}]({rel})"


def classifier_patches_per_s(repository: Path, seconds: float = 3.0) -> float:
    """The exported classifier's speed on this machine: ONNX Runtime, batch 32, CPU.

    Runners of the same kind differ about 2.7x (about 45 patches/s on slow ones, 120 on
    fast ones), so the demo's timings are read next to this figure.
    """
    import numpy as np

    from wsi_tumor.serving.onnx_session import build_session

    session = build_session(repository / "tumor_classifier" / "1" / "model.onnx")
    batch = np.random.default_rng(0).uniform(-1, 1, (32, 3, 224, 224)).astype(np.float32)
    session.run(None, {"patches": batch})  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"patches": batch})
        done += len(batch)
    return done / (time.perf_counter() - start)


def write_summary(
    config: DemoConfig, paths: DemoPaths, stages: Sequence[Stage], patches_per_s: float
) -> Path:
    """Write ``SUMMARY.md``: timings, validation accuracy, FROC and links to every output."""
    import torch

    root = paths.root
    last = torch.load(paths.checkpoints / "last.pt", map_location="cpu", weights_only=False)
    history = last.get("history", [])
    best_epoch = max(history, key=lambda h: h["valid_accuracy"])["epoch"] if history else None
    froc = _read_json(paths.froc / "froc.json")
    lines = [
        "# wsi-tumor demo run",
        "",
        f"Synthetic dataset: {config.train_slides} training, {config.valid_slides} validation and "
        f"{config.test_slides} test slides of {config.size} x {config.size} px at 0.243 um/px "
        f"(seed {config.seed}).",
        "",
        "## Timings",
        "",
        f"The exported classifier runs at **{patches_per_s:.0f} patches/s** on this machine "
        "(ONNX Runtime on the CPU, batch 32): runners of this kind range from about 45 "
        "(slow) to 120 (fast), so read the seconds below against that figure.",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *(f"| {s.name} | {s.seconds:.0f} |" for s in stages),
        f"| **total** | **{sum(s.seconds for s in stages):.0f}** |",
        "",
        "## Training (validation patch accuracy per epoch)",
        "",
        "Precision: "
        + (
            "mixed (autocast: bf16 on a CPU that computes it natively, fp16 on CUDA; "
            "`wsi-train --no-amp` trains in fp32)"
            if last.get("config", {}).get("amp")
            else "fp32 (this CPU has no native bf16, or `--no-amp` was given)"
        )
        + ".",
        "",
        "| epoch | train loss | valid loss | valid accuracy | train patches/s |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {int(h['epoch'])}{' (best)' if h['epoch'] == best_epoch else ''} | "
            f"{h['train_loss']:.4f} | {h['valid_loss']:.4f} | "
            f"{h['valid_accuracy']:.4f} | {h['train_patches_per_s']:.1f} |"
            for h in history
        ),
        "",
        f"Checkpoint: {_link(paths.checkpoints / 'best.pt', root)} "
        f"(resolved config {_link(paths.checkpoints / 'config.yaml', root)}).",
        "",
        "## FROC on the test slides (CAMELYON16 protocol)",
        "",
        f"**FROC {froc['froc']:.4f}**; sensitivity at "
        + ", ".join(f"{fp} FP/slide: {s:.3f}" for fp, s in froc["sensitivity_at_fp"].items())
        + ".",
        "",
        f"Report {_link(paths.froc / 'froc.json', root)}, curve "
        f"{_link(paths.froc / 'froc_curve.png', root)}.",
        "",
        *_mode_note(config, paths),
        "",
        "## Per test slide",
        "",
        "| slide | patches | patches/s | detections | map | heatmap | lesions CSV | GeoJSON |",
        "|---|---:|---:|---:|---|---|---|---|",
    ]
    for report_path in sorted(paths.predictions.glob("test_*.json")):
        report = _read_json(report_path)
        stem = report_path.stem
        p = paths.predictions
        lines.append(
            f"| {stem} | {report['counts']['patches']} | {report['patches_per_s']:.1f} | "
            f"{report['counts']['detections']} | {_link(p / f'{stem}.npy', root)} | "
            f"{_link(p / f'{stem}_heatmap.png', root)} | {_link(p / f'{stem}.csv', root)} | "
            f"{_link(p / f'{stem}.geojson', root)} |"
        )
    lines += ["", "Demo settings: `" + json.dumps(asdict(config), default=str) + "`", ""]
    summary = root / "SUMMARY.md"
    summary.write_text("\n".join(lines))
    return summary


def _mode_note(config: DemoConfig, paths: DemoPaths) -> list[str]:
    """How the inference ran and, for dense mode, how to get the exact map's FROC."""
    if config.mode == "exact":
        return ["Inference ran in exact mode: one patch per tissue cell, MONAI's map."]
    exact = paths.root / "predictions_exact"
    return [
        "Inference ran in **dense** mode (whole regions through the fully convolutional "
        "network: 7x exact mode's cells/s on a 2-core CPU, about 10x in the network alone "
        "on a GPU; its accuracy against exact mode is measured by `make accuracy`). The exact "
        "mode's FROC on the same slides:",
        "",
        "```bash",
        f"wsi-infer {paths.data / 'images'}/test_*.tif --out {exact} "
        f"--model-repository {paths.repository} --mode exact",
        f"wsi-froc --detections {exact} --ground-truth {paths.data / 'masks'} "
        f"--images {paths.data / 'images'} --out {paths.root / 'froc_exact'}",
        "```",
    ]


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``python -m wsi_tumor.demo`` (``make demo`` uses the defaults)."""
    defaults = DemoConfig()
    parser = make_parser(
        "wsi-demo",
        "Run the whole product on a synthetic dataset: generate, train, export, serve, infer, "
        "score FROC. Replaces the output directory's previous demo run.",
    )
    parser.add_argument("--out", type=Path, default=defaults.out, help="output directory")
    parser.add_argument("--size", type=int, default=defaults.size, help="slide side in px")
    parser.add_argument("--test-slides", type=int, default=defaults.test_slides)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--steps-per-epoch", type=int, default=defaults.steps_per_epoch)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--reader", choices=READER_CHOICES, default=defaults.reader)
    parser.add_argument(
        "--mode",
        choices=contract.MODES,
        default=defaults.mode,
        help="inference mode of wsi-infer (default: %(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0 on success, 1 when a stage failed."""
    return run_command(
        "wsi-demo", build_parser(), _demo, argv, log_format="demo: %(message)s", level=_info
    )


def _info(args: argparse.Namespace) -> int:
    return logging.INFO


def _demo(args: argparse.Namespace) -> int:
    config = DemoConfig(
        out=args.out,
        size=args.size,
        test_slides=args.test_slides,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        seed=args.seed,
        reader=args.reader,
        mode=args.mode,
        quiet=args.quiet,
    )
    paths = DemoPaths(config.out.resolve())
    stages = plan(config, paths)
    for sub in (paths.data, paths.checkpoints, paths.repository, paths.predictions, paths.froc):
        shutil.rmtree(sub, ignore_errors=True)
    (paths.root / "SUMMARY.md").unlink(missing_ok=True)
    paths.root.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        run_stage(stage)
    patches_per_s = classifier_patches_per_s(paths.repository)
    summary = write_summary(config, paths, stages, patches_per_s)
    froc = _read_json(paths.froc / "froc.json")["froc"]
    total = sum(s.seconds for s in stages)
    print(
        f"\nDemo finished in {total:.0f} s. FROC {froc:.4f} on {config.test_slides} test slides.\n"
        f"  summary:       {summary}\n"
        f"  checkpoint:    {paths.checkpoints / 'best.pt'}\n"
        f"  repository:    {paths.repository}\n"
        f"  maps, heatmaps, lesion CSV/GeoJSON: {paths.predictions}\n"
        f"  FROC report and curve: {paths.froc}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
