"""What must agree, and within what: tolerances, grid comparisons, dense/exact agreement.

Numpy only. A fast wrong answer must not pass, so no timed number counts unless its output
agrees with a float32 reference (docs/gpu_probe.md, "What must agree, and within what").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_bench.gpu_probe.config import Json

TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "fp16": 1e-2, "bf16": 3e-2}
"""Max |probability difference| allowed against the float32 reference, per arithmetic.

fp32 (TF32 off): the same function in the same precision; only summation order differs, so
differences stay near 1e-6 (measured 2e-6 on the CPU), and 1e-4 is the bench's agreement
rule. TF32 rounds convolution operands to fp16's 11-bit significand (unit roundoff 4.9e-4)
and fp16 also stores activations in it: 1e-2 for both. bf16 keeps 8 bits (unit roundoff
3.9e-3, 8x fp16's): 3e-2 (measured 7e-3 to 1.1e-2 with CPU bf16 on the GPU plan's 128-cell
check set). A wrong grid (another region, transposed, shifted by a cell) differs by tenths of
a probability under the probe's head, far above every tolerance.
"""

DECODE_TOLERANCE = 3.0
"""Max mean |difference| in 8-bit levels between the device's and the CPU's JPEG decoding:
decoders differ in IDCT rounding and chroma upsampling by about a level; a wrong colour
conversion or a broken tables merge costs tens."""


def finite(value: float | None) -> float | None:
    """``value`` as a float, or None when it is None, infinite or NaN (JSON has neither)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def sigmoid(logits: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Probabilities of logits, in float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def pearson(a: npt.ArrayLike, b: npt.ArrayLike) -> float | None:
    """Pearson correlation of two arrays (flattened), None when either is constant."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return None if denominator == 0.0 else float((x * y).sum()) / denominator


def compare_logits(
    got: npt.NDArray[np.floating[Any]], want: npt.NDArray[np.floating[Any]], tolerance: float
) -> Json:
    """Max / mean |probability difference| (and logits, Pearson) of two grids, and the verdict.

    Fails on a shape mismatch, a non-finite value or a max |probability difference| over
    ``tolerance``.
    """
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return {
            "cells": int(want.size),
            "shape": list(got.shape),
            "expected": list(want.shape),
            "tolerance": tolerance,
            "passed": False,
        }
    all_finite = bool(np.isfinite(got).all())
    diff = np.abs(sigmoid(got) - sigmoid(want)) if all_finite else np.full(want.shape, np.inf)
    return {
        "cells": int(want.size),
        "max_abs_prob": finite(float(diff.max())),
        "mean_abs_prob": finite(float(diff.mean())),
        "max_abs_logit": finite(float(np.abs(got - want).max())) if all_finite else None,
        "pearson_logit": pearson(got, want) if all_finite else None,
        "tolerance": tolerance,
        "passed": bool(all_finite and float(diff.max()) <= tolerance),
    }


def agreement(dense: npt.NDArray[np.floating[Any]], exact: npt.NDArray[np.floating[Any]]) -> Json:
    """Dense vs exact grids of the same regions: they differ by design (zero padding at the
    patch borders in the exact pass), so these figures are reported, not held to a tolerance."""
    p_dense, p_exact = sigmoid(dense), sigmoid(exact)
    diff = np.abs(p_dense - p_exact)
    return {
        "cells": int(diff.size),
        "max_abs_prob": float(diff.max()),
        "mean_abs_prob": float(diff.mean()),
        "pearson_prob": pearson(p_dense, p_exact),
        "pearson_logit": pearson(dense, exact),
    }
