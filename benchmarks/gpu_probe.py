"""GPU probe (issue 17): decode and network throughput of the dense and exact paths on one GPU.

Runs from the repository root with no install (the repository's ``src/`` goes on
``sys.path``), on an image with only torch, torchvision, numpy and tifffile::

    python3 benchmarks/gpu_probe.py --device cuda --budget-s 420
    python3 benchmarks/gpu_probe.py --cpu-tiny        # the test suite's CPU mode

The probe itself is :mod:`wsi_bench.gpu_probe`; docs/gpu_probe.md says what it measures.
Exit status: 0 when every correctness check passed, 1 otherwise, 2 on bad usage.
"""

# ruff: noqa: E402  (the repository's src/ goes on sys.path before the package is imported)
import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[1] / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from wsi_bench.gpu_probe.cli import main

if __name__ == "__main__":
    sys.exit(main(hard_exit=True))
