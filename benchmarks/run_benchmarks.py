"""``make bench``: perf_analyzer sweep + one slide three ways -> benchmarks/results/."""

import sys

from wsi_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
