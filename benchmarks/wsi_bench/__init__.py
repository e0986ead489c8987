"""``make bench``: perf_analyzer sweep, three ways through one slide, report and chart.

Modules: :mod:`machine` (what ran it), :mod:`resources` (RSS/CPU of process trees),
:mod:`baseline` (the MONAI in-process PyTorch baseline, run as its own process),
:mod:`ways` (the three end-to-end runs), :mod:`sweep` (perf_analyzer over both models),
:mod:`report` (agreement check, targets, markdown and chart) and :mod:`cli` (``main``).
Importing this package is cheap (no torch, MONAI or tritonclient).
"""

import os
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


__all__ = ["BENCHMARKS_DIR", "BenchError", "child_env"]
