"""``make accuracy``: the benchmark every accuracy claim is measured on.

One run, as a user would type it: ``wsi-synth --preset hard`` (real CAMELYON16 lesion
shapes, confounders, two staining centres, half of the test slides normal), ``wsi-labels``,
``wsi-train`` with the demo's recipe, then fine-tuned on whole regions (``--objective mixed``)
so that one checkpoint gives the same map in both modes, ``wsi-export``, then one local
tritonserver serving both modes while ``wsi-infer --mode exact`` and ``--mode dense`` read the
test set, and ``wsi-froc --reference`` scoring each (FROC, the six sensitivities, slide-level
AUC). The report (:mod:`wsi_bench.accuracy_report`) puts the two modes side by side with
their map agreement and a paired-bootstrap interval of their difference, says what each
confounder costs (per-slide results grouped by confounder), and gives the machine, the timings
and the classifier's patches/s.

Exit codes: 0 done (the report says whether the targets hold), 1 a stage failed, 2 bad
flags.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from wsi_bench.accuracy_paths import AccuracyPaths
from wsi_tumor.commandline import EXIT_OK, make_parser, run_command
from wsi_tumor.demo import DemoConfig, classifier_patches_per_s
from wsi_tumor.stages import Stage, console_script, run_stage

log = logging.getLogger(__name__)

MODES = ("exact", "dense")


def build_parser() -> argparse.ArgumentParser:
    """Flags of the accuracy benchmark."""
    recipe = DemoConfig()
    parser = make_parser("run_accuracy", __doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/accuracy"))
    parser.add_argument("--workdir", type=Path, default=None, help="keep work files here")
    parser.add_argument("--train", type=int, default=8, help="training slides")
    parser.add_argument("--valid", type=int, default=2, help="validation slides")
    parser.add_argument(
        "--test",
        type=int,
        default=10,
        help="test slides, half normal (10: about 9 lesions, so one lesion at one FP rate moves "
        "the FROC by less than the dense mode's 0.02 budget, in under 25 minutes on a slow "
        "runner)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=recipe.epochs)
    parser.add_argument("--steps-per-epoch", type=int, default=recipe.steps_per_epoch)
    parser.add_argument("--valid-steps", type=int, default=recipe.valid_steps)
    parser.add_argument("--batch-size", type=int, default=recipe.batch_size)
    parser.add_argument(
        "--finetune-steps",
        type=int,
        default=30,
        help="steps of the fine-tuning on whole regions and their patches (wsi-train "
        "--objective mixed) after the recipe; 0: score the recipe's checkpoint as it is",
    )
    parser.add_argument(
        "--consistency",
        type=float,
        default=0.1,
        help="the fine-tuning's wsi-train --consistency: weight of the whole region's squared "
        "logit difference from its patches' (0.1: chosen among 0, 0.1 and 1 on this set, see "
        "docs/training.md)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="skip training and fine-tuning: score these weights",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run for the test suite: small slides (--preset hard-small), 2 + 1 + 2 of "
        "them, 1 epoch of 2 steps, 1 fine-tuning step",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _stages(args: argparse.Namespace, paths: AccuracyPaths) -> list[Stage]:
    quiet = ["--quiet"] if args.quiet else []
    recipe = DemoConfig()
    stages = [
        Stage("generate the hard dataset", [
            console_script("wsi-synth"), str(paths.data),
            "--preset", "hard-small" if args.quick else "hard",
            "--train", str(args.train), "--valid", str(args.valid), "--test", str(args.test),
            "--seed", str(args.seed), *quiet,
        ]),
    ]  # fmt: skip
    checkpoint = args.checkpoint
    if checkpoint is None:
        # fp32 on every runner: wsi-train's default (bf16 where the CPU has it) would make the
        # benchmark's arithmetic, and so its weights, depend on the runner it lands on
        shared = [
            "--batch-size", str(args.batch_size), "--max-valid-steps", str(args.valid_steps),
            "--workers", str(recipe.workers), "--seed", str(args.seed), "--no-amp", *quiet,
        ]  # fmt: skip
        checkpoint = paths.checkpoints / "best.pt"
        stages += [
            Stage("write the training labels",
                  [console_script("wsi-labels"), str(paths.data), *quiet]),
            Stage("train (the demo's recipe)", [
                console_script("wsi-train"), str(paths.data), "--out", str(paths.checkpoints),
                "--epochs", str(args.epochs), "--max-steps-per-epoch", str(args.steps_per_epoch),
                *shared,
            ]),
        ]  # fmt: skip
        if args.finetune_steps > 0:
            stages.append(
                Stage("fine-tune on whole regions and their patches", [
                    console_script("wsi-train"), str(paths.data), "--out", str(paths.finetuned),
                    "--init-from", str(checkpoint), "--objective", "mixed",
                    "--consistency", str(args.consistency), "--epochs", "1",
                    "--max-steps-per-epoch", str(args.finetune_steps), *shared,
                ])
            )  # fmt: skip
            checkpoint = paths.finetuned / "best.pt"
    stages.append(
        Stage("export both networks", [
            console_script("wsi-export"), "--checkpoint", str(checkpoint),
            "--repository", str(paths.repository), *quiet,
        ])
    )  # fmt: skip
    return stages


def _inference_stages(args: argparse.Namespace, paths: AccuracyPaths, url: str) -> list[Stage]:
    quiet = ["--quiet"] if args.quiet else []
    tests = sorted(str(p) for p in (paths.data / "images").glob("test_*.tif"))
    stages = []
    for mode in MODES:
        stages.append(
            Stage(f"infer the test set, {mode} mode", [
                console_script("wsi-infer"), *tests, "--out", str(paths.predictions(mode)),
                "--url", url, "--mode", mode, "--overwrite", *quiet,
            ])
        )  # fmt: skip
        stages.append(
            Stage(f"score FROC and AUC, {mode} mode", [
                console_script("wsi-froc"), "--detections", str(paths.predictions(mode)),
                "--ground-truth", str(paths.data / "masks"), "--images",
                str(paths.data / "images"), "--reference",
                str(paths.data / "coords" / "testing.csv"), "--out", str(paths.froc(mode)),
                *quiet,
            ])
        )  # fmt: skip
    return stages


def run(args: argparse.Namespace, command: str) -> int:
    """The whole benchmark; returns the exit code."""
    from wsi_bench.accuracy_report import collect, write_report
    from wsi_bench.machine import describe_machine
    from wsi_tumor.serving.local_server import LocalTritonServer

    if args.quick:
        args.train, args.valid, args.test = 2, 1, 2
        args.epochs, args.steps_per_epoch, args.valid_steps = 1, 2, 1
        args.finetune_steps = min(args.finetune_steps, 1)
    started = time.perf_counter()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="wsi-accuracy-") as tmp:
        paths = AccuracyPaths(args.workdir or Path(tmp))
        for stage_dir in (paths.data, paths.checkpoints, paths.finetuned, paths.repository):
            shutil.rmtree(stage_dir, ignore_errors=True)
        paths.root.mkdir(parents=True, exist_ok=True)
        stages = [run_stage(stage) for stage in _stages(args, paths)]
        patches_per_s = classifier_patches_per_s(paths.repository)
        log_path = paths.root / "tritonserver.log"
        with LocalTritonServer(paths.repository, log_path=log_path) as server:
            machine = describe_machine(server.http_url)
            stages += [run_stage(s) for s in _inference_stages(args, paths, server.grpc_url)]
        results = collect(paths, MODES)
        results.update(
            date=date,
            command=command,
            machine=machine,
            classifier_patches_per_s=round(patches_per_s, 1),
            stages=[{"name": s.name, "seconds": round(s.seconds, 1)} for s in stages],
            duration_s=round(time.perf_counter() - started, 1),
            settings={
                k: str(v) if isinstance(v, Path) else v
                for k, v in vars(args).items()
                if k not in ("out", "workdir", "quiet")
            },
        )
        report = write_report(results, paths, args.out)
    print(f"accuracy report: {report} ({results['duration_s']:.0f} s)")
    for mode in MODES:
        scores = results["modes"][mode]
        print(f"{mode:6} FROC {scores['froc']:.4f}  AUC {scores['auc']:.4f}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the accuracy benchmark (``make accuracy``)."""
    shown = list(sys.argv[1:] if argv is None else argv)
    command = "make accuracy" if not shown else "benchmarks/run_accuracy.py " + " ".join(shown)
    return run_command(
        "run_accuracy",
        build_parser(),
        lambda args: run(args, command),
        argv,
        log_format="%(asctime)s %(name)s: %(message)s",
    )
