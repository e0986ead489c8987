"""``make soak``: a bounded load-and-soak run of the real server -> benchmarks/results/soak/."""

import sys

from wsi_bench.soak.cli import main

if __name__ == "__main__":
    sys.exit(main())
