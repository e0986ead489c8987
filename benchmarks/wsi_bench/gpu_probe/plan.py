"""Sizes of one probe run (the full and tiny plans), tolerances, the projected slide."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wsi_tumor import contract

Json = dict[str, Any]
SLIDE_CELLS = 1_000_000
"""Tissue cells (one per 64 px mask cell) of the projected slide."""
MONAI_SECONDS = 540.0
"""The MONAI bundle's end-to-end time on such a slide (about 9 minutes)."""
GOAL_SECONDS = 20.0
"""The product's end-to-end goal on one H100/H200."""
MONAI_READ_FACTOR = (contract.PATCH_SIZE / contract.PATCH_STRIDE) ** 2
"""Level-0 pixels MONAI decodes per cell: one 224 px patch per 64 px cell (12.25)."""
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "fp16": 1e-2, "bf16": 3e-2}
"""Max |probability difference| from the float32 reference per arithmetic: fp32 (summation
order only), TF32 and fp16 (an 11-bit significand), bf16 (8 bits). A wrong grid differs by
tenths under the probe's head."""
DECODE_TOLERANCE = 3.0
"""Max mean |difference| in 8-bit levels of the device's and the CPU's JPEG decoding (IDCT
rounding and chroma upsampling differ by about a level; a colour or tables error by tens)."""
TARGET_LOGIT_STD = 1.0
"""Spread of the check set's logits under the probe's head (:func:`.reference.fit_probe_head`)."""


@dataclass(frozen=True)
class Plan:
    """Sizes of one run (the defaults: the full plan, for a GPU). ``shapes``: (mode, k,
    regions per call), most important first; ``variants``: the eager variants, the first the
    float32 baseline; ``low_precision``: the candidates for ``torch.compile``, started only
    with ``compile_estimate_s`` left; ``min_timed_calls`` 0: the first call is the number."""

    name: str = "full"
    canvas: int = 4096
    tile: int = 256
    decode_batches: tuple[int, ...] = (64, 256, 1024)
    check_cells: int = 8
    check_regions: int = 2
    shapes: tuple[tuple[str, int, int], ...] = (
        ("dense", 16, 16), ("exact", 8, 4), ("dense", 32, 4), ("exact", 8, 16),
        ("dense", 8, 64), ("exact", 8, 1), ("dense", 48, 2), ("dense", 16, 4), ("dense", 32, 1),
        ("dense", 8, 16),
    )  # fmt: skip
    variants: tuple[str, ...] = ("fp32", "fp16-cl", "bf16-cl", "tf32-cl")
    low_precision: tuple[str, ...] = ("fp16-cl", "bf16-cl")
    compile_stage: bool = True
    compile_estimate_s: float = 75.0
    decode_passes: int = 100
    warmup: int = 2
    max_iters: int = 200
    min_timed_calls: int = 1
    reference_chunk: int = 32


FULL = Plan()
TINY = Plan(
    name="tiny",
    canvas=1024,
    decode_batches=(4, 16),
    check_cells=2,
    shapes=(("dense", 2, 2), ("exact", 2, 1)),
    variants=("fp32", "fp32-cl"),
    low_precision=("fp32-cl",),
    compile_stage=False,
    decode_passes=2,
    warmup=1,
    max_iters=2,
    min_timed_calls=0,
    reference_chunk=16,
)
