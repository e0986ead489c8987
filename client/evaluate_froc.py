"""FROC of per-slide detections against CAMELYON16 ground truth (``wsi-froc``).

Example: ``python client/evaluate_froc.py --detections preds/ --ground-truth masks/ --out froc/``
"""

import sys

from wsi_tumor.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
