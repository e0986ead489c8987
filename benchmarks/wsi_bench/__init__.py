"""``make bench``: perf_analyzer sweep, three ways through one slide, report and chart.

Modules: :mod:`machine` (what ran it), :mod:`resources` (RSS/CPU of process trees),
:mod:`baseline` (the MONAI in-process PyTorch baseline, run as its own process),
:mod:`ways` (the three end-to-end runs), :mod:`sweep` (perf_analyzer over both models),
:mod:`report` (agreement check, targets, markdown and chart) and :mod:`cli` (``main``).
Importing this package is cheap (no torch, MONAI or tritonclient).
"""

import os
from dataclasses import dataclass
from pathlib import Path

from wsi_tumor.errors import WsiTumorError

BENCHMARKS_DIR = Path(__file__).resolve().parent.parent
"""The folder that holds this package: children run as ``python -m wsi_bench.x`` need it."""


def child_env() -> dict[str, str]:
    """This process's environment with :data:`BENCHMARKS_DIR` first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCHMARKS_DIR), env.get("PYTHONPATH")]))
    return env


class BenchError(WsiTumorError):
    """The benchmark could not run, or its three maps disagree."""


@dataclass(frozen=True)
class Target:
    """One goal of the run: ``measured >= threshold``."""

    name: str
    measured: float
    threshold: float
    detail: str

    @property
    def passed(self) -> bool:
        """Whether the measured ratio reaches the threshold."""
        return self.measured >= self.threshold

    @property
    def verdict(self) -> str:
        """PASS, or MISS with the shortfall in percent of the threshold."""
        if self.passed:
            return "PASS"
        return f"MISS by {100 * (1 - self.measured / self.threshold):.1f} %"


__all__ = ["BENCHMARKS_DIR", "BenchError", "Target", "child_env"]
