"""``wsi-mine``: one round of hard-negative mining over the training slides.

::

    wsi-mine DATASET --maps MAPS --model-repository REPO   # maps the training slides, mines
    wsi-mine DATASET --maps MAPS                            # MAPS already holds their maps
    wsi-labels DATASET                                      # adds the mined list
    wsi-train DATASET --init-from FIRST/best.pt ...         # fine-tunes on the larger set

The training slides are those named in ``coords/tumor_train.txt`` and
``coords/normal_train.txt``. With ``--model-repository`` (a local server is started) or
``--url`` their maps are made in dense mode first, as ``wsi-infer`` makes them (slides whose
maps are complete are skipped). The mined centres go to ``coords/hard_negative_train.txt``
(``slide_name,x,y``, NCRF's layout), with ``hard_negative_train.json`` beside it saying how
many were found and mined on which slide and, for the synthetic generator's datasets, inside
which confounders (see :mod:`wsi_tumor.training.mining`).

Exit codes: 0 done, 1 a map, slide or annotation could not be read, 2 bad flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from wsi_tumor.commandline import EXIT_OK, add_logging_flags, make_parser, run_command
from wsi_tumor.data import layout
from wsi_tumor.errors import ConfigError, ServerError
from wsi_tumor.training.mining import MiningConfig


def build_parser() -> argparse.ArgumentParser:
    """The ``wsi-mine`` argument parser."""
    defaults = MiningConfig()
    p = make_parser("wsi-mine", __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path, help="dataset dir (coords/, images/, jsons/)")
    p.add_argument("--maps", type=Path, required=True, help="wsi-infer outputs of the slides")
    served = p.add_mutually_exclusive_group()
    served.add_argument(
        "--model-repository", type=Path, default=None,
        help="make the maps first with a local tritonserver on this repository",
    )  # fmt: skip
    served.add_argument("--url", default=None, help="make the maps first with this server")
    p.add_argument(
        "--threshold", type=float, default=defaults.threshold,
        help=f"mine cells scored above this (default {defaults.threshold})",
    )  # fmt: skip
    p.add_argument(
        "--margin-um", type=float, default=defaults.margin_um,
        help="never mine this close to a tumour polygon (default 75, the FROC's growth)",
    )  # fmt: skip
    p.add_argument(
        "--min-distance", type=int, default=defaults.min_distance_cells,
        help="map cells between mined centres (default 6: 384 px at level 0)",
    )  # fmt: skip
    p.add_argument(
        "--max-share", type=float, default=defaults.max_share,
        help="mine at most this share of the normal training centres (default 0.5)",
    )  # fmt: skip
    p.add_argument("--annotations", type=Path, default=None, help="default DATASET/jsons")
    p.add_argument("--out", type=Path, default=None, help="default DATASET/coords/" +
                   layout.HARD_NEGATIVE_TRAIN)  # fmt: skip
    add_logging_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-mine``; returns the exit code."""
    return run_command("wsi-mine", build_parser(), _mine, argv)


def _make_maps(args: argparse.Namespace, slides: list[Path]) -> None:
    from wsi_tumor.client.config import build_parser as infer_parser
    from wsi_tumor.client.config import config_from_args
    from wsi_tumor.client.runner import run

    served = (
        ["--model-repository", str(args.model_repository)]
        if args.model_repository is not None
        else ["--url", args.url]
    )
    argv = [*map(str, slides), "--out", str(args.maps), "--mode", "dense", *served]
    cohort = run(config_from_args(infer_parser().parse_args(argv + ["--quiet"] * args.quiet)))
    if cohort.failed:
        first = cohort.failed[0]
        raise ServerError(f"{first.slide}: cannot map the training slide for mining: {first.error}")


def _mine(args: argparse.Namespace) -> int:
    import logging

    from wsi_tumor.slide import SLIDE_SUFFIXES
    from wsi_tumor.training.labels import find_file
    from wsi_tumor.training.mining import count_centres, mine, write_mined

    log = logging.getLogger("wsi_tumor.mine")
    try:
        config = MiningConfig(args.threshold, args.margin_um, args.min_distance, args.max_share)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    dataset: Path = args.dataset
    coords = [layout.coords_path(dataset, n) for n in (layout.TUMOR_TRAIN, layout.NORMAL_TRAIN)]
    slides, _ = count_centres(coords)
    _, normal_centres = count_centres(coords[1:])
    images = dataset / layout.IMAGES_DIR
    if args.model_repository is not None or args.url is not None:
        paths = []
        for slide in slides:
            found = find_file(images, slide, SLIDE_SUFFIXES)
            if found is None:
                raise ConfigError(f"{images}: no slide file for {slide!r}")
            paths.append(found)
        _make_maps(args, paths)
    annotations = args.annotations or dataset / layout.JSONS_DIR
    mined, summary = mine(dataset, args.maps, slides, normal_centres, config, annotations)
    out = args.out or layout.coords_path(dataset, layout.HARD_NEGATIVE_TRAIN)
    write_mined(mined, out, summary)
    log.info(
        "%s: %d hard negatives mined (of %d candidates above %.2f, cap %d) on %d slides%s",
        out,
        summary["mined"],
        summary["candidates"],
        config.threshold,
        summary["cap"],
        len(slides),
        f"; by confounder {summary['by_confounder']}" if summary["by_confounder"] else "",
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
