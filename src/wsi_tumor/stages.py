"""Running the product's console scripts one after another, as a user would type them.

``make demo`` and ``make accuracy`` are sequences of :class:`Stage`: each is a command
(``wsi-synth``, ``wsi-train``, ...) run with the terminal attached, so its progress bars
show, and timed.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from wsi_tumor.errors import WsiTumorError

log = logging.getLogger(__name__)


class StageError(WsiTumorError):
    """A stage failed; the message names it and its exit code."""


@dataclass
class Stage:
    """One command and how long it took."""

    name: str
    argv: list[str]
    seconds: float = 0.0


def console_script(name: str) -> str:
    """The console script ``name`` installed beside this interpreter.

    Raises:
        StageError: it is missing (the project is not installed: ``make setup``).
    """
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise StageError(f"{path}: console script missing; run `make setup`")
    return str(path)


def run_stage(stage: Stage) -> Stage:
    """Run one command with the terminal attached; raise StageError when it fails."""
    log.info("== %s", stage.name)
    log.info("$ %s", " ".join(stage.argv))
    started = time.perf_counter()
    code = subprocess.call(stage.argv)
    stage.seconds = time.perf_counter() - started
    if code != 0:
        raise StageError(f"stage '{stage.name}' failed with exit code {code}: {stage.argv[0]}")
    log.info("   %s: %.0f s", stage.name, stage.seconds)
    return stage
