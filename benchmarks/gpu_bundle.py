"""``make gpu-bundle``: build ``.gpu-bundle/`` (the Triton server, numpy 1.26 for its Python
backend and the client packages the GPU image lacks), the folder a GPU device command carries
for ``benchmarks/gpu_serve.py`` (docs/gpu.md)."""

import sys

from wsi_bench.gpu_bundle import main

if __name__ == "__main__":
    sys.exit(main())
