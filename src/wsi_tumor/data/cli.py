"""``wsi-synth``: write a synthetic CAMELYON16-style dataset.

Example::

    wsi-synth demo_data --train 4 --test 2 --size 8192 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from wsi_tumor.commandline import EXIT_OK, add_logging_flags, make_parser, run_command
from wsi_tumor.data.synthetic import SynthConfig, generate
from wsi_tumor.errors import ConfigError

PRESETS = ("easy", "hard", "hard-small")

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The ``wsi-synth`` argument parser."""
    parser = make_parser(
        "wsi-synth",
        "Write a synthetic CAMELYON16-style dataset: pyramidal slides, ASAP XML and NCRF "
        "JSON lesion annotations, tumour masks and NCRF patch-centre lists.",
    )
    parser.add_argument("out", type=Path, help="output directory (created if missing)")
    parser.add_argument(
        "--train",
        type=int,
        default=2,
        help="training slides, tumour and normal together (default 2)",
    )
    parser.add_argument(
        "--valid",
        type=int,
        default=2,
        help="validation slides, tumour and normal together (default 2)",
    )
    parser.add_argument("--test", type=int, default=2, help="test slides (default 2)")
    parser.add_argument(
        "--size",
        type=int,
        default=8192,
        help="side of each square slide in level-0 pixels (default 8192)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--tumor-fraction",
        type=float,
        default=0.5,
        help="share of tumour slides in each split (default 0.5)",
    )
    parser.add_argument(
        "--coords", type=int, default=400, help="patch centres per training list (default 400)"
    )
    parser.add_argument(
        "--valid-coords",
        type=int,
        default=100,
        help="patch centres per validation list (default 100)",
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="easy",
        help="easy: smooth blobs on clean tissue (the demo's); hard: real CAMELYON16 lesion "
        "shapes with confounders and two staining centres (the accuracy benchmark; --size "
        "and --tumor-fraction do not apply); hard-small: the same on small slides, for tests and "
        "quick runs",
    )
    parser.add_argument(
        "--confounders",
        type=lambda text: [item for item in text.split(",") if item],
        default=None,
        help="with a hard preset: the confounders to paint, comma-separated (default: all "
        "of lymphoid, germinal, fold, blur, pen, stain)",
    )
    add_logging_flags(parser, verbose=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-synth``; returns the exit code (2 on bad flags, 1 on a failed write)."""
    return run_command("wsi-synth", build_parser(), _synth, argv)


def _synth(args: argparse.Namespace) -> int:
    config = SynthConfig(
        out=args.out,
        train=args.train,
        valid=args.valid,
        test=args.test,
        size=args.size,
        seed=args.seed,
        tumor_fraction=args.tumor_fraction,
        coords=args.coords,
        valid_coords=args.valid_coords,
        quiet=args.quiet,
    )
    start = time.perf_counter()
    if args.preset != "easy":
        from wsi_tumor.data.hard import SMALL, generate_hard, hard_config_from

        changes = dict(SMALL) if args.preset == "hard-small" else {}
        if args.confounders is not None:
            changes["confounders"] = frozenset(args.confounders)
        count = len(generate_hard(hard_config_from(config, **changes)))
    else:
        if args.confounders is not None:
            raise ConfigError("--confounders applies to the hard presets only")
        count = len(generate(config))
    log.info("wrote %d slides to %s in %.1f s", count, args.out, time.perf_counter() - start)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
