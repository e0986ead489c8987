"""``make accuracy``: the hard synthetic benchmark in exact and dense mode."""

import sys

from wsi_bench.accuracy import main

if __name__ == "__main__":
    sys.exit(main())
