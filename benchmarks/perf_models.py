"""perf_analyzer throughput and latency of tumor_classifier and tumor_detector."""

import sys

from wsi_tumor.serving.perf_cli import main

if __name__ == "__main__":
    sys.exit(main())
