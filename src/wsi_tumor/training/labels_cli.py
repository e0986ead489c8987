"""``wsi-labels``: patch-centre lists + tumour polygons -> training / validation label CSVs.

Dataset-dir mode (the synthetic generator's layout, NCRF's file names)::

    wsi-labels DATASET            # coords/{tumor,normal}_{train,valid}.txt, images/, jsons/
                                  # -> DATASET/training.csv, DATASET/validation.csv
                                  # (+ coords/hard_negative_train.txt when wsi-mine wrote it)

Explicit mode::

    wsi-labels --images DIR --annotations DIR --train-coords A.txt B.txt \
        --valid-coords C.txt D.txt --out-dir OUT
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from wsi_tumor.commandline import EXIT_OK, add_logging_flags, make_parser, run_command
from wsi_tumor.data import layout
from wsi_tumor.errors import ConfigError
from wsi_tumor.slide import READER_CHOICES
from wsi_tumor.training.config import IMAGES_DIR, TRAIN_CSV, VALID_CSV
from wsi_tumor.training.labels import (
    make_labels,
    reader_slide_scale,
    reader_slide_size,
    write_label_csv,
)

log = logging.getLogger(__name__)

ANNOTATION_DIRS: Final = (layout.JSONS_DIR, layout.ANNOTATIONS_DIR)
SPLIT_COORDS: Final = {
    "train": (layout.TUMOR_TRAIN, layout.NORMAL_TRAIN, layout.HARD_NEGATIVE_TRAIN),
    "valid": (layout.TUMOR_VALID, layout.NORMAL_VALID),
}


def _parser() -> argparse.ArgumentParser:
    parser = make_parser("wsi-labels", __doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("dataset", nargs="?", type=Path, help="dataset dir (fills the defaults)")
    parser.add_argument("--images", type=Path, help="slides named <slide>.tif")
    parser.add_argument(
        "--annotations",
        type=Path,
        help="tumour polygons: <slide>.json (NCRF) or <slide>.xml (ASAP)",
    )
    parser.add_argument("--train-coords", type=Path, nargs="+", help="slide,x,y files")
    parser.add_argument("--valid-coords", type=Path, nargs="+", help="slide,x,y files")
    parser.add_argument("--out-dir", type=Path, help=f"writes {TRAIN_CSV} and {VALID_CSV}")
    parser.add_argument("--reader", choices=READER_CHOICES, default="auto")
    parser.add_argument(
        "--mpp",
        type=float,
        default=None,
        help="level-0 um/px of slides whose file does not state it; slides at another "
        "resolution than 0.243 um/px get their grid cells placed at that resolution",
    )
    add_logging_flags(parser, verbose=False)
    return parser


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    ds: Path | None = args.dataset
    if ds is not None:
        coords = ds / layout.COORDS_DIR
        args.images = args.images or ds / IMAGES_DIR
        if args.annotations is None:
            args.annotations = next((ds / d for d in ANNOTATION_DIRS if (ds / d).is_dir()), None)
        for split, names in SPLIT_COORDS.items():
            key = f"{split}_coords"
            if getattr(args, key) is None:
                setattr(args, key, [coords / n for n in names if (coords / n).is_file()])
        args.out_dir = args.out_dir or ds
    for key in ("images", "out_dir"):
        if getattr(args, key) is None:
            raise ConfigError(f"--{key.replace('_', '-')} is required (or give a dataset dir)")
    if not args.train_coords and not args.valid_coords:
        raise ConfigError("no coords files: give --train-coords/--valid-coords or a dataset dir")
    if not Path(args.images).is_dir():
        raise ConfigError(f"{args.images}: images directory does not exist")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Write the label CSVs; exit code 2 with one line on stderr on bad input."""
    return run_command("wsi-labels", _parser(), _labels, argv)


def _labels(args: argparse.Namespace) -> int:
    args = _resolve(args)
    slide_size = reader_slide_size(args.reader)
    for coords, name in ((args.train_coords, TRAIN_CSV), (args.valid_coords, VALID_CSV)):
        if not coords:
            continue
        rows = make_labels(
            coords,
            args.images,
            args.annotations,
            slide_size,
            reader_slide_scale(args.reader, args.mpp),
        )
        path = write_label_csv(rows, args.out_dir / name)
        positives = sum(sum(r.labels) for r in rows)
        log.info("%s: %d regions, %d of %d cells tumour", path, len(rows), positives, 9 * len(rows))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
