"""``make bench``: perf_analyzer sweep, three ways through one slide, report and chart.

Modules: :mod:`machine` (what ran it), :mod:`resources` (RSS/CPU of process trees),
:mod:`baseline` (the MONAI in-process PyTorch baseline, run as its own process),
:mod:`ways` (the three end-to-end runs), :mod:`sweep` (perf_analyzer over both models),
:mod:`report` (agreement check, targets, markdown and chart) and :mod:`cli` (``main``).
Importing this package is cheap (no torch, MONAI or tritonclient).
"""

from wsi_tumor.errors import WsiTumorError


class BenchError(WsiTumorError):
    """The benchmark could not run, or its three maps disagree."""


__all__ = ["BenchError"]
