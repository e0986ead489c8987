"""``wsi-slide-classifier``: fit the slide classifier and put it in the model repository.

::

    wsi-infer DATA/images/normal_00[5-7].tif DATA/images/tumor_00[5-7].tif --out MAPS \\
        --mode dense --model-repository REPO        # held-out (validation) slides
    wsi-slide-classifier --maps MAPS --labels DATA/coords/slides.csv --repository REPO

Fits on every labelled slide of ``--labels`` that has a complete map in one of the ``--maps``
directories, except test slides: a ``slide,label,split`` file (the dataset's
``coords/slides.csv``) has its ``test`` rows left out, so no test slide's map or label can
reach the fit. Use maps of slides the network was not trained on (validation slides, or
out-of-fold maps): maps of its own training slides are overconfident. Writes
``REPO/slide_classifier.json`` and sets the ``slide_classifier`` parameter of both detectors'
configs; the client reads it from the server (restart a running server) and gives each slide
a tumour probability.

Exit codes: 0 fitted, 1 unreadable maps or labels, or too few slides, 2 bad flags.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsi_tumor import contract
from wsi_tumor.commandline import EXIT_OK, add_logging_flags, make_parser, run_command
from wsi_tumor.errors import EvaluationError
from wsi_tumor.evaluation.slide_classifier import DEFAULT_C, DEFAULT_FEATURES

log = logging.getLogger(__name__)

TEST_SPLIT = "test"


def read_labels(path: Path) -> tuple[dict[str, int], list[str]]:
    """Slide -> 1/0 from a ``slide,label[,split]`` CSV, and the test slides left out.

    Raises:
        EvaluationError: a missing file or a label that is neither tumour nor normal.
    """
    from wsi_tumor.evaluation.slide_level import read_reference

    labels = read_reference(path)
    tests = []
    with path.open(newline="", encoding="utf-8") as handle:
        for fields in csv.reader(handle):
            if len(fields) >= 3 and fields[2].strip().lower() == TEST_SPLIT:
                tests.append(Path(fields[0].strip()).stem)
    for slide in tests:
        labels.pop(slide, None)
    return labels, tests


def labelled_features(
    maps: Sequence[Path], labels: dict[str, int]
) -> tuple[list[str], list[dict[str, float]], list[int]]:
    """Features of every labelled slide with a complete map: names, feature rows, labels.

    Raises:
        EvaluationError: a map's report or array cannot be read.
    """
    from wsi_tumor.client.outputs import SlideOutputs
    from wsi_tumor.evaluation.slide_features import map_features

    names, rows, ys, missing = [], [], [], []
    for slide in sorted(labels):
        outputs = next(
            (SlideOutputs(d, slide) for d in maps if SlideOutputs(d, slide).complete()), None
        )
        if outputs is None:
            missing.append(slide)
            continue
        try:
            report = json.loads(outputs.report.read_text(encoding="utf-8"))
            prob_map = np.load(outputs.prob_map, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise EvaluationError(f"{outputs.report}: cannot read the slide's map ({exc})") from exc
        cell_um = float(report.get("map_cell_um", contract.PATCH_STRIDE * contract.MODEL_MPP))
        names.append(slide)
        rows.append(map_features(prob_map, cell_um))
        ys.append(labels[slide])
    if missing:
        log.info(
            "%d labelled slides have no complete map in %s (left out): %s",
            len(missing),
            ", ".join(map(str, maps)),
            ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""),
        )
    return names, rows, ys


def build_parser() -> argparse.ArgumentParser:
    """The ``wsi-slide-classifier`` argument parser."""
    p = make_parser(
        "wsi-slide-classifier", __doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--maps", type=Path, nargs="+", required=True, help="wsi-infer output dirs")
    p.add_argument(
        "--labels", type=Path, required=True,
        help="slide,label[,split] CSV (test rows are never used)",
    )  # fmt: skip
    p.add_argument("--repository", type=Path, required=True, help="model repository to update")
    p.add_argument(
        "--features", default=",".join(DEFAULT_FEATURES),
        help=f"comma-separated map features (default {','.join(DEFAULT_FEATURES)})",
    )  # fmt: skip
    p.add_argument("--c", type=float, default=DEFAULT_C, help="inverse L2 strength (default 1)")
    add_logging_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-slide-classifier``; returns the exit code."""
    return run_command("wsi-slide-classifier", build_parser(), _fit, argv)


def _fit(args: argparse.Namespace) -> int:
    from wsi_tumor.evaluation.slide_classifier import fit_classifier, write_classifier
    from wsi_tumor.evaluation.slide_level import roc_auc
    from wsi_tumor.serving.repository import set_detector_parameter

    labels, tests = read_labels(args.labels)
    if tests:
        log.info("%s: %d test slides left out of the fit", args.labels, len(tests))
    names, rows, ys = labelled_features(args.maps, labels)
    features = tuple(f.strip() for f in args.features.split(",") if f.strip())
    try:
        classifier = fit_classifier(
            rows,
            ys,
            features,
            args.c,
            {"slides": names, "tumour": int(sum(ys)), "normal": len(ys) - int(sum(ys))},
        )
    except ValueError as exc:
        raise EvaluationError(f"{args.labels}: {exc}") from None
    repository: Path = args.repository
    path = write_classifier(classifier, repository / contract.SLIDE_CLASSIFIER_FILE)
    set_detector_parameter(repository, contract.SLIDE_CLASSIFIER_PARAMETER, classifier.to_text())
    fitted = [classifier.probability(row) for row in rows]
    print(
        f"slide classifier on {len(names)} slides ({sum(ys)} tumour), features "
        f"{', '.join(features)}; AUC on its own fitting slides {roc_auc(ys, fitted):.3f} -> {path}"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
