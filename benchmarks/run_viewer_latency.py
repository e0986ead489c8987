"""Tile latency of a real ``wsi-view`` on a cohort: median and p95, cold and cached."""

import sys

from wsi_bench.viewer_latency import main

if __name__ == "__main__":
    sys.exit(main())
