#!/usr/bin/env python3
"""A local web viewer of a wsi-infer cohort (``wsi-view``).

Example: ``python client/view_wsi.py out/ --slides slides/ --ground-truth annotations/``
"""

import sys

from wsi_tumor.viewer.cli import main

if __name__ == "__main__":
    sys.exit(main())
