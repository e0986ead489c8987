"""``wsi-train``: train the tumour classifier (single process, or under torchrun)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from wsi_tumor.commandline import EXIT_OK, log_level, run_command

log = logging.getLogger(__name__)


def _level(args: argparse.Namespace) -> int:
    """INFO (WARNING with ``--quiet``); ranks other than 0 log warnings only."""
    return log_level(args) if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags (and ``--config`` YAML), train, return the exit code (2 on bad input)."""
    from wsi_tumor.training.config import build_parser

    rank = int(os.environ.get("RANK", "0"))
    return run_command(
        "wsi-train",
        build_parser(),
        _train,
        argv,
        level=_level,
        log_format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )


def _train(args: argparse.Namespace) -> int:
    from wsi_tumor.training.config import resolve
    from wsi_tumor.training.trainer import train

    result = train(resolve(args))
    if result.history:
        last = result.history[-1]
        log.info(
            "done: valid accuracy %.4f; best checkpoint %s", last["valid_accuracy"], result.best
        )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
