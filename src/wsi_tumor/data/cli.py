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
    specs = generate(config)
    log.info("wrote %d slides to %s in %.1f s", len(specs), args.out, time.perf_counter() - start)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
