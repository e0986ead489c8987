"""GPU serve check (issue 30): tritonserver with the python-torch runtime answering wsi-infer
over gRPC on a synthetic slide of 267,904 tissue cells, dense and exact, measured; docs/gpu.md.

    python3 benchmarks/gpu_serve.py --bundle .gpu-bundle --device cuda   # the GPU machine
    python benchmarks/gpu_serve.py --device cpu --tiny                   # every stage, small

Exit status: 0 when every essential stage ran and the maps agree with a CPU run, else 1.
"""

# ruff: noqa: E402  (the repository's src/ goes on sys.path before the package is imported)
import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[1] / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from wsi_bench.gpu_serve.cli import main

if __name__ == "__main__":
    sys.exit(main(hard_exit=True))
