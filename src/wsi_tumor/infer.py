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
from typing import TYPE_CHECKING

from wsi_tumor.client.config import build_parser, config_from_args
from wsi_tumor.commandline import EXIT_OK, run_command
from wsi_tumor.errors import EXIT_FAILURE, WsiTumorError

if TYPE_CHECKING:
    from wsi_tumor.client.runner import CohortResult

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-infer`` and return its exit code (0 ok, 1 a slide failed, 2 usage/start-up)."""
    # A slide's own failure is caught and reported per slide; anything that escapes the run
    # concerns every slide (flags, server, model), so it is a usage/start-up error.
    return run_command(
        "wsi-infer",
        build_parser(),
        _run,
        argv,
        usage_errors=(WsiTumorError,),
        interrupted="interrupted; incomplete slides have no <slide>.json",
    )


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if config.ray is not None:
        from wsi_tumor.cluster.ray_cohort import run_on_ray

        return report_cohort(
            run_on_ray(
                config,
                config.ray or None,
                servers=config.ray_servers,
                task_cpus=config.ray_task_cpus,
                max_retries=config.ray_max_retries,
            )
        )
    from wsi_tumor.client.runner import run

    return report_cohort(run(config))


def report_cohort(cohort: CohortResult) -> int:
    """Print each failed slide on stderr, log the tally; 1 when a slide failed, else 0."""
    for result in cohort.failed:
        sys.stderr.write(f"wsi-infer: {result.slide}: {result.error_type}: {result.error}\n")
    log.info(
        "%d of %d slides complete, %d skipped, %d failed; summary %s",
        sum(r.status == "complete" for r in cohort.slides),
        len(cohort.slides),
        sum(r.status == "skipped" for r in cohort.slides),
        len(cohort.failed),
        cohort.summary_path,
    )
    return EXIT_FAILURE if cohort.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
