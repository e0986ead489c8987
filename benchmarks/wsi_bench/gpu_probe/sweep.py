"""The network sweep: timing one variant on one batch shape, checking each timed batch against
the float32 baseline, and the ``network`` and ``compile`` stages."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from wsi_bench.budget import left
from wsi_bench.gpu_probe.network import Forward, Networks, Variant, parse_variant, sync, tf32
from wsi_bench.gpu_probe.plan import Json, Plan
from wsi_bench.gpu_probe.reference import compare_logits
from wsi_bench.gpu_probe.report import Probe
from wsi_bench.gpu_probe.state import Context, Shape
from wsi_tumor import contract

logger = logging.getLogger(__name__)


def measure(
    forward: Forward, shape: Shape, slice_s: float, device: torch.device, plan: Plan
) -> tuple[Json, npt.NDArray[np.float32]]:
    """Warm up (the first call's output is kept for the checks), then time calls for about
    ``slice_s`` seconds in all; the device is synchronised only around the timed block."""
    inputs, start = shape.inputs, time.perf_counter()
    first = forward(inputs[0]).detach().cpu().numpy().copy()
    first_s = time.perf_counter() - start
    for i in range(1, plan.warmup):
        forward(inputs[i % len(inputs)])
    sync(device)
    t0 = time.perf_counter()
    if plan.min_timed_calls == 0 and t0 - start >= slice_s:
        calls, seconds = 1, first_s  # the tiny plan: the first call is the number
    else:
        forward(inputs[1 % len(inputs)])
        sync(device)
        one, spent = time.perf_counter() - t0, time.perf_counter() - start
        remaining = slice_s / 2 if first_s > slice_s / 2 else slice_s - spent  # a compile ate it
        more = max(0, min(plan.max_iters - 1, int(remaining / max(one, 1e-6))))
        for i in range(more):
            forward(inputs[i % len(inputs)])
        sync(device)
        calls, seconds = more + 1, time.perf_counter() - t0
    rate = shape.cells_per_call * calls / seconds
    return {"calls": calls, "seconds": seconds, "first_call_s": first_s, "cells_per_s": rate}, first


def run_variant(
    probe: Probe, nets: Networks, variant: Variant, shape: Shape, slice_s: float, plan: Plan
) -> Json:
    """Time one variant on one shape, check it against the shape's float32 baseline, record."""
    row: Json = {"mode": shape.mode, "variant": variant.name, "cells": shape.cells,
                 "regions": shape.regions, "side_px": contract.region_size(shape.cells),
                 "cells_per_call": shape.cells_per_call}  # fmt: skip
    key = f"{shape.mode} k={shape.cells} x{shape.regions} {variant.name}"
    try:
        with tf32(variant.arithmetic == "tf32"):
            fn = nets.forward(variant, shape.mode, shape.cells)
            timing, first = measure(fn, shape, slice_s, nets.device, plan)
    except Exception as exc:  # OOM, compile or capture failure: recorded, the sweep goes on
        row.update(error=f"{type(exc).__name__}: {exc}"[:500], passed=False)
        logger.warning("%s failed: %s", key, row["error"])
        probe.network.append(row)
        if nets.device.type == "cuda":
            torch.cuda.empty_cache()
        return row
    row.update(timing)
    if shape.baseline is None and variant.name == plan.variants[0]:
        shape.baseline = first
        row.update(check="baseline (checked against the CPU on the check set)", passed=True)
    elif shape.baseline is not None:
        result = compare_logits(first, shape.baseline, variant.tolerance)
        row.update(check=result, passed=result["passed"])
        name = f"{key} vs device {plan.variants[0]}"
        probe.add_check({"name": name, "what": "first timed batch", **result})
    else:
        row.update(check="no baseline", passed=False)
    logger.info("%s: %.0f cells/s", key, timing["cells_per_s"])
    probe.network.append(row)
    return row


def build_shapes(
    nets: Networks, canvas: npt.NDArray[np.uint8], plan: Plan, seed: int
) -> tuple[list[Shape], list[str]]:
    """Device inputs (batches of regions at random places) of every shape that fits."""
    rng = np.random.default_rng(seed + 1)
    canvas_dev = torch.from_numpy(canvas).to(nets.device)
    shapes, skipped = [], []
    for mode, cells, regions in plan.shapes:
        side = contract.region_size(cells)
        if side > min(canvas.shape[:2]):
            skipped.append(f"{mode} k={cells}: region {side} px > canvas")
            continue
        inputs = []
        for _ in range(1 if plan.name == "tiny" else 2):
            ys = rng.integers(0, canvas.shape[0] - side + 1, regions)
            xs = rng.integers(0, canvas.shape[1] - side + 1, regions)
            crops = [canvas_dev[y : y + side, x : x + side] for x, y in zip(xs, ys, strict=True)]
            inputs.append(torch.stack(crops).contiguous())
        shapes.append(Shape(mode, cells, regions, inputs))
    return shapes, skipped


def _sweep(ctx: Context, runs: Sequence[tuple[Variant, Shape]], deadline: float) -> int:
    """Run each (variant, shape) with 80 % of an even share of the time left; how many ran."""
    for done, (variant, shape) in enumerate(runs):
        if left(deadline) <= 0:
            return done
        slice_s = left(deadline) / (len(runs) - done) * 0.8
        run_variant(ctx.probe, ctx.checked()[1], variant, shape, slice_s, ctx.plan)
    return len(runs)


def stage_network(ctx: Context, deadline: float) -> str:
    """Every eager variant of the plan on every batch shape that fits the canvas."""
    ctx.shapes, skipped = build_shapes(ctx.checked()[1], ctx.slide()[1], ctx.plan, ctx.seed)
    runs = [(parse_variant(name), shape) for shape in ctx.shapes for name in ctx.plan.variants]
    done = _sweep(ctx, runs, deadline)
    note = f"partial: {done} of {len(runs)} measurements" if done < len(runs) else "ok"
    return f"{note}; skipped {', '.join(skipped)}" if skipped else note


def stage_compile(ctx: Context, deadline: float) -> str:
    """``torch.compile`` (default, then reduce-overhead on CUDA) of the fastest low-precision
    variant on the best dense shape, then the best exact one, while a compile still fits."""
    if ctx.no_compile or not ctx.plan.compile_stage:
        why = "--no-compile" if ctx.no_compile else "tiny plan (tests/test_gpu_probe.py compiles)"
        return f"skipped: {why}"
    probe, plan = ctx.probe, ctx.plan
    fastest = probe.best_row("dense", variants=plan.low_precision)
    if fastest is None or not ctx.shapes:
        return "skipped: no passing low-precision variant"
    base = fastest["variant"]
    targets: list[Shape] = []
    for mode in ("dense", "exact"):
        best = probe.best_row(mode, eager_only=True)
        if best is not None:
            wanted = (mode, best["cells"], best["regions"])
            targets += [s for s in ctx.shapes if (s.mode, s.cells, s.regions) == wanted][:1]
    modes = ["default", "reduce-overhead"] if ctx.device.type == "cuda" else ["default"]
    runs = [(m, s) for s in targets for m in modes]  # dense first: it matters most
    for i, (mode, shape) in enumerate(runs):
        if left(deadline) < plan.compile_estimate_s:
            need = plan.compile_estimate_s
            return f"partial: {i} of {len(runs)} compiles (each needs ~{need:.0f} s)"
        variant = parse_variant(f"{base}+compile" + ("" if mode == "default" else f":{mode}"))
        slice_s = min(10.0, left(deadline) / (len(runs) - i))
        run_variant(probe, ctx.checked()[1], variant, shape, slice_s, plan)
    return "ok: backend eager (dynamo only) on the CPU" if ctx.device.type != "cuda" else "ok"
