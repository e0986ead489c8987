#!/usr/bin/env python
"""Which calibration method keeps INT8 maps closest to FP32: the measurement behind the default.

Quantises one trained dense network (``tumor_detector_dense/1/model.onnx`` of an FP32
repository) with each of ONNX Runtime's calibration methods, calibrated on the training
slides as ``wsi-export --precision int8`` does, and compares each INT8 graph's grids with the
FP32 graph's on regions drawn from other slides (the test slides): Pearson, mean and max
|difference| on tissue cells, and the cells that land on the other side of 0.5. The
classifier shares the quantised body, so the dense network decides for both.

    python benchmarks/int8_calibration.py --repository REPO --calibration DATA \\
        --evaluate DATA/images --out benchmarks/results/int8_calibration
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from wsi_tumor import contract
from wsi_tumor.export.calibration import CalibrationConfig, read_calibration_set
from wsi_tumor.export.int8 import dense_feeds
from wsi_tumor.export.parity import onnx_dense
from wsi_tumor.export.quantize import METHODS, QuantSettings, quantize_graph


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True, help="an FP32 repository")
    parser.add_argument("--calibration", type=Path, required=True, help="training slides")
    parser.add_argument("--evaluate", type=Path, required=True, help="other slides")
    parser.add_argument("--regions", type=int, default=16, help="calibration regions")
    parser.add_argument("--eval-regions", type=int, default=24)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    float_path = args.repository / contract.DENSE_MODEL / "1" / "model.onnx"
    calibration = read_calibration_set(
        CalibrationConfig(args.calibration, patches=1, regions=args.regions)
    )
    evaluation = read_calibration_set(
        CalibrationConfig(args.evaluate, patches=1, regions=args.eval_regions, seed=1)
    )
    tissue = evaluation.masks.astype(bool)

    def grids(path: Path) -> np.ndarray:
        return np.concatenate(
            [
                onnx_dense(path, r[None], m[None])
                for r, m in zip(evaluation.regions, evaluation.masks, strict=True)
            ]
        )

    reference = grids(float_path)[tissue].astype(np.float64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            started = time.perf_counter()
            out = Path(tmp) / f"{method}.onnx"
            settings = QuantSettings(method=method)
            quantize_graph(
                float_path, out, dense_feeds(calibration), settings, Path(tmp) / f"{method}.json"
            )
            seconds = time.perf_counter() - started
            got = grids(out)[tissue].astype(np.float64)
            diff = np.abs(got - reference)
            rows.append(
                {
                    "method": method,
                    "pearson": float(np.corrcoef(got, reference)[0, 1]),
                    "mean_abs_diff": float(diff.mean()),
                    "max_abs_diff": float(diff.max()),
                    "cells_across_half": int(((got >= 0.5) != (reference >= 0.5)).sum()),
                    "quantise_s": round(seconds, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "repository": str(args.repository),
        "calibration": calibration.manifest(),
        "evaluation": {**evaluation.manifest(), "tissue_cells": int(tissue.sum())},
        "methods": rows,
        "best": min(rows, key=lambda r: r["mean_abs_diff"])["method"],  # Pearsons tie
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    print("best:", result["best"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
