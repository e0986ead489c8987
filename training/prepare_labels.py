"""Write training/validation label CSVs: ``python training/prepare_labels.py --help``."""

import sys

from wsi_tumor.training.labels_cli import main

if __name__ == "__main__":
    sys.exit(main())
