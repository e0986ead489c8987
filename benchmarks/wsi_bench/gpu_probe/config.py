"""Sizes of one probe run (the full and tiny plans), the projected slide and the report files."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from wsi_tumor import contract

Json = dict[str, Any]
"""A JSON-ready mapping: the report and its parts."""

REPORT_JSON = "gpu_probe.json"
REPORT_MD = "gpu_probe.md"
GRIDS_NPZ = "gpu_probe_grids.npz"

SLIDE_CELLS = 1_000_000
"""Tissue cells (64 x 64 level-0 px each, one per mask cell) of the projected slide."""
MONAI_SECONDS = 540.0
"""The MONAI bundle's end-to-end time on such a slide (about 9 minutes, issue 17)."""
GOAL_SECONDS = 20.0
"""The product's end-to-end goal on one H100/H200."""
MONAI_READ_FACTOR = (contract.PATCH_SIZE / contract.PATCH_STRIDE) ** 2
"""Level-0 pixels MONAI decodes per cell: one 224 px patch read per 64 px cell (12.25)."""

TARGET_LOGIT_STD = 1.0
"""Spread of the check set's dense logits under the probe's head (see
:func:`wsi_bench.gpu_probe.reference.fit_probe_head`), so that probabilities span (0, 1) and
a probability tolerance tells a wrong grid from a right one."""


@dataclass(frozen=True)
class Plan:
    """Sizes of one probe run.

    Attributes:
        name: "full" (a GPU) or "tiny" (the test suite's CPU mode).
        canvas: Side in px of the synthetic slide region (a multiple of ``tile``).
        tile: JPEG tile side in px.
        jpeg_quality: JPEG quality of the synthetic tiles.
        decode_batches: Tiles per device decode call.
        check_cells: k of the check regions (compared with the CPU reference).
        check_regions: Number of check regions.
        dense_shapes: (k, regions per batch) of the dense sweep, most important first.
        exact_shapes: (k, regions per batch) of the exact sweep (k * k * regions patches).
        variants: Eager variants of the sweep; the first is the float32 baseline.
        low_precision: Candidates for the CUDA-graph and compile stages.
        compile_stage: Run the torch.compile stage (minutes of inductor on a CPU: not tiny).
        compile_estimate_s: A compile is started only with this much stage time left.
        decode_passes: Most passes over the tile set per decode measurement.
        warmup: Untimed calls before timing (the first one's output is checked).
        max_iters: Most timed calls per measurement.
        min_timed_calls: Timed calls after the warm-up even when the slice is spent (0: the
            first call is the number, as in the tiny plan).
        pipeline_regions: Most regions per pipeline pass.
        reference_chunk: Patches per CPU reference call.
    """

    name: str
    canvas: int
    tile: int
    jpeg_quality: int
    decode_batches: tuple[int, ...]
    check_cells: int
    check_regions: int
    dense_shapes: tuple[tuple[int, int], ...]
    exact_shapes: tuple[tuple[int, int], ...]
    variants: tuple[str, ...]
    low_precision: tuple[str, ...]
    compile_stage: bool
    compile_estimate_s: float
    decode_passes: int
    warmup: int
    max_iters: int
    min_timed_calls: int
    pipeline_regions: int
    reference_chunk: int


FULL_PLAN = Plan(
    name="full",
    canvas=4096,
    tile=256,
    jpeg_quality=90,
    decode_batches=(64, 256, 1024),
    check_cells=8,
    check_regions=2,
    dense_shapes=((16, 16), (32, 4), (8, 64), (48, 2), (16, 4), (32, 1), (8, 16)),
    exact_shapes=((8, 4), (8, 16), (8, 1)),
    variants=("fp32", "fp16-cl", "bf16-cl", "tf32-cl"),
    low_precision=("fp16-cl", "bf16-cl"),
    compile_stage=True,
    compile_estimate_s=75.0,
    decode_passes=100,
    warmup=2,
    max_iters=200,
    min_timed_calls=1,
    pipeline_regions=64,
    reference_chunk=32,
)

TINY_PLAN = Plan(
    name="tiny",
    canvas=1024,
    tile=256,
    jpeg_quality=90,
    decode_batches=(4, 16),
    check_cells=2,
    check_regions=2,
    dense_shapes=((2, 2),),
    exact_shapes=((2, 1),),
    variants=("fp32", "fp32-cl"),
    low_precision=("fp32-cl",),
    compile_stage=False,
    compile_estimate_s=10.0,
    decode_passes=2,
    warmup=1,
    max_iters=2,
    min_timed_calls=0,
    pipeline_regions=2,
    reference_chunk=16,
)


def select_plan(tiny: bool, device_type: str) -> Plan:
    """The plan of a run: the full one, or the tiny one (``--quick``, ``--cpu-tiny``).

    Args:
        tiny: Tiny sizes were asked for.
        device_type: "cuda" or "cpu"; a tiny run on CUDA sweeps the GPU's precisions, which
            are cheap at tiny sizes.
    """
    if not tiny:
        return FULL_PLAN
    if device_type == "cuda":
        return replace(
            TINY_PLAN, variants=FULL_PLAN.variants, low_precision=FULL_PLAN.low_precision
        )
    return TINY_PLAN
