"""``wsi-froc``: FROC of per-slide detections against CAMELYON16 ground truth."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from wsi_tumor.commandline import EXIT_OK, add_logging_flags, make_parser, run_command
from wsi_tumor.evaluation.nms import NMS_BOX, NMS_RADIUS, NMS_THRESHOLD
from wsi_tumor.evaluation.slide_level import SCORE_RULES

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``wsi-froc``."""
    p = make_parser("wsi-froc", "FROC score of lesion detections with the CAMELYON16 protocol.")
    p.add_argument(
        "--detections",
        required=True,
        help="directory of <slide>.csv (prob,x,y level-0) or <slide>.npy maps",
    )
    p.add_argument(
        "--ground-truth",
        required=True,
        help="directory of <slide>_mask.tif or <slide>.xml; neither = normal slide",
    )
    p.add_argument("--out", required=True, help="output directory for froc.json, curve CSV/PNG")
    p.add_argument(
        "--level",
        type=int,
        default=None,
        help="evaluation mask level (default 5; monai: the map level)",
    )
    p.add_argument(
        "--protocol",
        choices=("camelyon16", "monai"),
        default="camelyon16",
        help="camelyon16 (organisers') or monai (LesionFROC defaults)",
    )
    p.add_argument(
        "--map-level",
        type=int,
        default=None,
        help="detections are <slide>.npy probability maps at this level",
    )
    p.add_argument(
        "--images",
        default=None,
        help="directory of <slide>.tif: size for XML ground truth, and mpp",
    )
    p.add_argument(
        "--mpp",
        type=float,
        default=None,
        help="level-0 um/px for every slide (default: the slide's, else 0.243)",
    )
    p.add_argument("--nms-radius", type=int, default=NMS_RADIUS, help="NCRF NMS radius (cells)")
    p.add_argument("--nms-box", type=int, default=NMS_BOX, help="MONAI NMS box size (cells)")
    p.add_argument(
        "--nms-threshold", type=float, default=NMS_THRESHOLD, help="NMS stopping probability"
    )
    p.add_argument(
        "--reference",
        default=None,
        help="testing.csv-style 'slide,label' file (label tumor/normal): adds the slide-level "
        "task, ROC AUC of each slide's score, to froc.json with roc_curve.png/csv",
    )
    p.add_argument(
        "--slide-score",
        choices=SCORE_RULES,
        default="map-max",
        help="a slide's score: map-max (its map's maximum, needs <slide>.npy beside the CSV; "
        "the challenge baseline), detection-max (its best candidate) or classifier (the slide "
        "classifier's probability in <slide>.json); froc.json gives every available score's "
        "AUC",
    )
    add_logging_flags(p)
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-froc``; returns the exit code (0 ok, 1 bad input, 2 bad flags)."""
    return run_command(
        "wsi-froc", build_parser(), _froc, argv, log_format="%(levelname)s %(name)s: %(message)s"
    )


def _froc(args: argparse.Namespace) -> int:
    from wsi_tumor.evaluation.evaluate import FrocConfig, evaluate_directory
    from wsi_tumor.evaluation.report import write_report

    config = FrocConfig.build(
        protocol=args.protocol,
        level=args.level,
        map_level=args.map_level,
        mpp=args.mpp,
        nms_radius=args.nms_radius,
        nms_box=args.nms_box,
        nms_threshold=args.nms_threshold,
    )
    report = evaluate_directory(
        args.detections, args.ground_truth, config, args.images, progress=not args.quiet
    )
    slide_level = None
    if args.reference is not None:
        from wsi_tumor.evaluation.evaluate import list_detection_files
        from wsi_tumor.evaluation.slide_level import evaluate_slide_level, read_reference

        slide_level = evaluate_slide_level(
            list_detection_files(args.detections, args.map_level),
            read_reference(args.reference),
            args.slide_score,
        )
    paths = write_report(args.out, report, slide_level)
    results = [r.result for r in report.slides]
    print(
        f"FROC {report.score:.4f} ({config.protocol}, level {config.level}) over "
        f"{len(results)} slides ({sum(r.is_tumour for r in results)} tumour, "
        f"{sum(r.num_lesions for r in results)} lesions, "
        f"{sum(len(r.itc_labels) for r in results)} ITC, {sum(r.num_fp for r in results)} FP) "
        f"-> {paths['json']}"
    )
    if slide_level is not None:
        others = ", ".join(
            f"{rule} {auc:.4f}"
            for rule, auc in slide_level.auc_by_score.items()
            if rule != slide_level.score_rule
        )
        print(
            f"slide-level AUC {slide_level.auc:.4f} ({slide_level.score_rule}) over "
            f"{len(slide_level.slides)} slides ({int(slide_level.labels.sum())} tumour)"
            + (f"; {others}" if others else "")
        )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
