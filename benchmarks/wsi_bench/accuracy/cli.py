"""``make accuracy`` and ``make accuracy-ablation``: the hard benchmark, judged over seeds.

``make accuracy`` runs the shipped recipe on seeds 0, 1 and 2 (each its own hard dataset:
real CAMELYON16 lesion shapes, confounders, a second staining centre, half of the test
slides normal): the first model, hard-negative mining, fine-tuning, the slide classifier
fitted on the validation slides, then the test slides in dense mode on every seed, exact
mode on the first seed, and the INT8 export of the same checkpoint beside FP32. The report
gives each metric's mean and 95 % interval over seeds, per-seed rows, the map agreements and
the false candidates per confounder.

``--ablation`` runs the same seeds once per lever (the baseline, then each lever alone on
it) and the recipe with exact mode on every seed; its report adds each lever's paired
difference over seeds.

Exit codes: 0 done (the report says whether the targets hold), 1 a stage failed, 2 bad
flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from wsi_bench.accuracy.recipe import BASELINE, LEVERS, QUICK, RECIPE, Levers, SeedPaths, Sizes
from wsi_tumor.commandline import EXIT_OK, make_parser, run_command
from wsi_tumor.errors import ConfigError


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of seeds: {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be distinct and >= 0: {text!r}")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    """Flags of the accuracy benchmark."""
    sizes = Sizes()
    p = make_parser("run_accuracy", __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", type=Path, default=None,
        help="report folder (default benchmarks/results/accuracy, accuracy_ablation with "
        "--ablation)",
    )  # fmt: skip
    p.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) work files here")
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="default 0,1,2")
    p.add_argument(
        "--exact-seeds", type=_seeds, default=None,
        help="seeds scored in exact mode too (default: the first; --ablation: all)",
    )  # fmt: skip
    p.add_argument("--ablation", action="store_true", help="one run per lever, paired")
    p.add_argument("--no-int8", dest="int8", action="store_false", help="skip the INT8 export")
    for name in ("train", "valid", "test", "epochs", "steps_per_epoch", "finetune_steps"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(sizes, name))
    p.add_argument("--consistency", type=float, default=sizes.consistency)
    p.add_argument(
        "--quick", action="store_true",
        help="every stage on tiny slides, for the test suite (--preset hard-small, 1 seed)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace, command: str) -> int:
    """The whole benchmark; returns the exit code."""
    from wsi_bench.accuracy.collect import collect_seed, variant_key
    from wsi_bench.accuracy.pipeline import Runner, run_seed
    from wsi_bench.accuracy.report import render
    from wsi_bench.accuracy.summary import summarize
    from wsi_bench.machine import describe_machine
    from wsi_tumor.demo import classifier_patches_per_s
    from wsi_tumor.fileio import write_json, write_text

    if args.quick:
        sizes = QUICK
        args.seeds = args.seeds[:1] if args.seeds != [0, 1, 2] else [0]
    else:
        fields = {f.name for f in dataclasses.fields(Sizes)} & set(vars(args))
        sizes = dataclasses.replace(Sizes(), **{k: getattr(args, k) for k in fields})
    if sizes.valid < 4:
        raise ConfigError("--valid must be >= 4: the slide classifier needs two slides a class")
    variants: list[Levers] = [RECIPE]
    if args.ablation:
        variants = [BASELINE, *(levers for _, levers in LEVERS), RECIPE]
    exact_seeds = args.exact_seeds or (args.seeds if args.ablation else args.seeds[:1])
    out = args.out or Path("benchmarks/results") / (
        "accuracy_ablation" if args.ablation else "accuracy"
    )
    started, date = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    runner = Runner(quiet=args.quiet)
    per_seed, seconds = {}, {}
    with tempfile.TemporaryDirectory(prefix="wsi-accuracy-") as tmp:
        work = args.workdir or Path(tmp)
        for seed in args.seeds:
            paths = SeedPaths(work / f"seed_{seed}")
            exact = seed in exact_seeds
            seconds[seed] = run_seed(runner, seed, sizes, paths, variants, exact, args.int8, RECIPE)
            modes = ["dense"] + (["exact"] if exact else []) + (["dense-int8"] * args.int8)
            per_seed[seed] = collect_seed(paths, variants, RECIPE, modes)
        first = SeedPaths(work / f"seed_{args.seeds[0]}").run(RECIPE) / "model_repository"
        patches_per_s = classifier_patches_per_s(first)
    results = {
        "date": date,
        "command": command,
        "machine": describe_machine(),
        "classifier_patches_per_s": round(patches_per_s, 1),
        "seeds": args.seeds,
        "exact_seeds": exact_seeds,
        "sizes": dataclasses.asdict(sizes),
        "recipe": RECIPE.describe(),
        "final_key": variant_key(RECIPE),
        "per_seed": per_seed,
        "seed_seconds": seconds,
        "summary": summarize(per_seed, RECIPE, args.ablation),
        "stages": [dataclasses.asdict(r) for r in runner.records],
        "duration_s": round(time.perf_counter() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    report = write_text(out / "report.md", render(results, variants))
    recipe = results["summary"]["recipe"]
    print(
        f"accuracy report: {report} ({results['duration_s'] / 60:.1f} min, classifier "
        f"{patches_per_s:.0f} patches/s): FROC {recipe['froc']['mean']:.3f}, AUC "
        f"{recipe['auc']['mean']:.3f} (map max {recipe['auc_map_max']['mean']:.3f}) over "
        f"{len(args.seeds)} seed(s)"
    )
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
