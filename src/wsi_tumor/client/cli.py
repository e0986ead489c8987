"""``wsi-infer``: tumour probability maps of whole-slide images through Triton.

Exit codes: 0 every slide complete (or skipped as already complete), 1 at least one slide
failed (see ``cohort_summary.json``), 2 the run could not start (bad flags or config, no
slides, the server cannot be started or reached, or its model does not match).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from wsi_tumor.client.config import build_parser, config_from_args
from wsi_tumor.errors import WsiTumorError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_SLIDE_FAILED = 1
EXIT_USAGE = 2
QUIET_LOGGERS = ("cucim", "PIL", "matplotlib", "grpc")


def setup_logging(verbose: bool, quiet: bool) -> logging.Handler:
    """Log to stderr: DEBUG with ``--verbose``, WARNING with ``--quiet``, else INFO.

    Returns:
        The handler added to the root logger (``main`` removes it when it returns).
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    handler.setLevel(level)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level, level) if root.level else level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-infer`` and return its exit code (0 ok, 1 a slide failed, 2 usage/config)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on bad usage
    root_level = logging.getLogger().level
    handler = setup_logging(args.verbose, args.quiet)
    try:
        return _run(args)
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(root_level)


def _run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        from wsi_tumor.client.runner import run

        cohort = run(config)
    except WsiTumorError as exc:
        print(f"wsi-infer: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("wsi-infer: interrupted; incomplete slides have no <slide>.json", file=sys.stderr)
        return 130
    for result in cohort.failed:
        print(f"wsi-infer: {result.slide}: {result.error_type}: {result.error}", file=sys.stderr)
    total = len(cohort.slides)
    log.info(
        "%d of %d slides complete, %d skipped, %d failed; summary %s",
        sum(r.status == "complete" for r in cohort.slides),
        total,
        sum(r.status == "skipped" for r in cohort.slides),
        len(cohort.failed),
        cohort.summary_path,
    )
    return EXIT_SLIDE_FAILED if cohort.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
