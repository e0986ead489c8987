"""Export a checkpoint to ONNX / TensorRT and write the Triton model repository."""

import sys

from wsi_tumor.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
