"""GPU probe (issue 17): tile decode and network throughput of the dense and exact paths on
one GPU, every timed output checked against a CPU float32 reference, projected to a 1M-cell
slide (docs/gpu.md). Runs with no install: ``python3 benchmarks/gpu_probe.py``.

Modules: :mod:`.plan` (sizes, tolerances), :mod:`.network` (variants, passes), :mod:`.reference`
(comparisons, CPU reference; stages ``reference``, ``check``), :mod:`.decode` (``slide``,
``decode_*``), :mod:`.sweep` (``network``, ``compile``), :mod:`.report`, :mod:`.runner`."""

from wsi_tumor.errors import WsiTumorError


class ProbeError(WsiTumorError):
    """An option or checkpoint the probe cannot use (exit status 2)."""


__all__ = ["ProbeError"]
