#!/usr/bin/env python3
"""Tumour probability maps of whole-slide images through Triton (see ``wsi-infer --help``)."""

import sys

from wsi_tumor.infer import main

if __name__ == "__main__":
    sys.exit(main())
