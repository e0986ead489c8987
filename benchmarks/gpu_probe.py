"""GPU probe (issue 17): decode and network throughput of the dense and exact paths on one
GPU (docs/gpu.md). Runs from the repository root with no install (``src/`` goes on
``sys.path``) on an image with only torch, torchvision, numpy and tifffile::

    python3 benchmarks/gpu_probe.py --device cuda --budget-s 420
    python3 benchmarks/gpu_probe.py --cpu-tiny        # the test suite's CPU mode
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from wsi_bench.gpu_probe.runner import main

if __name__ == "__main__":
    sys.exit(main(hard_exit=True))
