"""``wsi-train``: train the tumour classifier (single process, or under torchrun)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from wsi_tumor.errors import WsiTumorError, report_error

log = logging.getLogger(__name__)


def setup_logging(quiet: bool) -> None:
    """Log to stderr: INFO (WARNING with ``--quiet``); other ranks than 0 log warnings only."""
    rank = int(os.environ.get("RANK", "0"))
    level = logging.WARNING if quiet or rank != 0 else logging.INFO
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags (and ``--config`` YAML), train, return the exit code (2 on bad input)."""
    from wsi_tumor.training.config import config_from_argv

    try:
        cfg = config_from_argv(argv)
        setup_logging(cfg.quiet)
        from wsi_tumor.training.trainer import train

        result = train(cfg)
    except WsiTumorError as exc:
        return report_error("wsi-train", exc)
    if result.history:
        last = result.history[-1]
        log.info("done: valid accuracy %.4f; best checkpoint %s", last["valid_accuracy"],
                 result.best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
