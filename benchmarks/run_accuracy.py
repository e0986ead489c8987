"""``make accuracy`` / ``make accuracy-ablation``: the hard benchmark over seeds."""

import sys

from wsi_bench.accuracy.cli import main

if __name__ == "__main__":
    sys.exit(main())
