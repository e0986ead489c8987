"""Train the tumour classifier: ``python training/train.py --help`` (same as ``wsi-train``)."""

import sys

from wsi_tumor.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
