"""The network sweep: timing one variant on one batch shape, checking each timed batch against
the float32 baseline, and the ``network``, ``graphs`` and ``compile`` stages."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from wsi_bench.gpu_probe.budget import left
from wsi_bench.gpu_probe.checks import compare_logits
from wsi_bench.gpu_probe.config import Json, Plan
from wsi_bench.gpu_probe.network import Forward, Networks, Variant, parse_variant, sync, tf32
from wsi_bench.gpu_probe.report import Probe
from wsi_tumor import contract

if TYPE_CHECKING:
    from wsi_bench.gpu_probe.context import Context

logger = logging.getLogger(__name__)


@dataclass
class Measurement:
    """Throughput of one forward on one batch shape."""

    calls: int
    seconds: float
    first_s: float
    cells_per_s: float
    first_output: npt.NDArray[np.float32]


def measure(
    forward: Forward,
    inputs: Sequence[torch.Tensor],
    cells: int,
    slice_s: float,
    device: torch.device,
    plan: Plan,
) -> Measurement:
    """Warm up (the first call's output is kept for the checks), then time calls for about
    ``slice_s`` seconds in all; the device is synchronised only around the timed block."""
    start = time.perf_counter()
    first = forward(inputs[0]).detach().cpu().numpy().copy()
    first_s = time.perf_counter() - start
    for i in range(1, plan.warmup):
        forward(inputs[i % len(inputs)])
    sync(device)
    if plan.min_timed_calls == 0 and time.perf_counter() - start >= slice_s:
        return Measurement(1, first_s, first_s, cells / first_s, first)  # first call = number
    t0 = time.perf_counter()
    forward(inputs[1 % len(inputs)])
    sync(device)
    one = time.perf_counter() - t0
    remaining = slice_s - (time.perf_counter() - start)
    if first_s > slice_s / 2:  # a compile or autotune ate the slice: give the timing its own
        remaining = slice_s / 2
    calls = max(0, min(plan.max_iters - 1, int(remaining / max(one, 1e-6))))
    t0 = time.perf_counter()
    for i in range(calls):
        forward(inputs[i % len(inputs)])
    sync(device)
    seconds = one + time.perf_counter() - t0
    return Measurement(calls + 1, seconds, first_s, cells * (calls + 1) / seconds, first)


@dataclass
class Shape:
    """One batch shape of the sweep with its device inputs and float32 baseline output."""

    mode: str
    cells: int
    regions: int
    inputs: list[torch.Tensor]
    baseline: npt.NDArray[np.float32] | None = None

    @property
    def key(self) -> str:
        """e.g. ``dense k=16 x16``."""
        return f"{self.mode} k={self.cells} x{self.regions}"

    @property
    def cells_per_call(self) -> int:
        """Cells one call classifies."""
        return self.regions * self.cells * self.cells


def run_variant(
    probe: Probe, nets: Networks, variant: Variant, shape: Shape, slice_s: float, plan: Plan
) -> Json:
    """Time one variant on one shape, check it against the shape's float32 baseline, record."""
    row: Json = {
        "mode": shape.mode,
        "variant": variant.name,
        "cells": shape.cells,
        "regions": shape.regions,
        "side_px": contract.region_size(shape.cells),
        "cells_per_call": shape.cells_per_call,
    }
    try:
        with tf32(variant.arithmetic == "tf32"):
            fn = nets.forward(variant, shape.mode, shape.cells, shape.inputs[0])
            m = measure(fn, shape.inputs, shape.cells_per_call, slice_s, nets.device, plan)
    except Exception as exc:  # OOM, compile or capture failure: recorded, the sweep goes on
        row.update(error=f"{type(exc).__name__}: {exc}"[:500], passed=False)
        logger.warning("%s %s failed: %s", shape.key, variant.name, row["error"])
        probe.network.append(row)
        if nets.device.type == "cuda":
            torch.cuda.empty_cache()
        return row
    row.update(calls=m.calls, seconds=m.seconds, first_call_s=m.first_s, cells_per_s=m.cells_per_s)
    if shape.baseline is None and variant.name == plan.variants[0]:
        shape.baseline = m.first_output
        row.update(check="baseline (checked against the CPU on the check set)", passed=True)
    elif shape.baseline is not None:
        result = compare_logits(m.first_output, shape.baseline, variant.tolerance)
        row.update(check=result, passed=result["passed"])
        probe.add_check(
            {
                "name": f"{shape.key} {variant.name} vs device {plan.variants[0]}",
                "what": "first timed batch",
                **result,
            }
        )
    else:
        row.update(check="no baseline", passed=False)
    logger.info("%s %s: %.0f cells/s", shape.key, variant.name, m.cells_per_s)
    probe.network.append(row)
    return row


def build_shapes(
    nets: Networks, canvas: npt.NDArray[np.uint8], plan: Plan, seed: int
) -> tuple[list[Shape], list[str]]:
    """Device inputs (two batches of regions at random places) of every shape that fits."""
    rng = np.random.default_rng(seed + 1)
    canvas_dev = torch.from_numpy(canvas).to(nets.device)
    shapes, skipped = [], []
    n_inputs = 1 if plan.name == "tiny" else 2
    for mode, list_ in (("dense", plan.dense_shapes), ("exact", plan.exact_shapes)):
        for cells, regions in list_:
            side = contract.region_size(cells)
            if side > min(canvas.shape[:2]):
                skipped.append(f"{mode} k={cells}: region {side} px > canvas")
                continue
            inputs = []
            for _ in range(n_inputs):
                ys = rng.integers(0, canvas.shape[0] - side + 1, regions)
                xs = rng.integers(0, canvas.shape[1] - side + 1, regions)
                batch = [
                    canvas_dev[y : y + side, x : x + side] for x, y in zip(xs, ys, strict=True)
                ]
                inputs.append(torch.stack(batch).contiguous())
            shapes.append(Shape(mode, cells, regions, inputs))
    # most important first: alternate dense and exact in the plan's order
    dense = [s for s in shapes if s.mode == "dense"]
    exact = [s for s in shapes if s.mode == "exact"]
    ordered = []
    for i in range(max(len(dense), len(exact))):
        ordered += dense[i : i + 1] + exact[i : i + 1]
    return ordered, skipped


def _sweep(
    probe: Probe,
    nets: Networks,
    runs: Sequence[tuple[Variant, Shape]],
    plan: Plan,
    deadline: float,
) -> int:
    """Run each (variant, shape) in order with 80 % of an even share of the time left.

    Returns:
        How many ran before the deadline passed (``len(runs)`` when all did).
    """
    for done, (variant, shape) in enumerate(runs):
        left_s = left(deadline)
        if left_s <= 0:
            return done
        run_variant(probe, nets, variant, shape, left_s / (len(runs) - done) * 0.8, plan)
    return len(runs)


def stage_network(ctx: Context, deadline: float) -> str:
    """Every eager variant of the plan on every batch shape that fits the canvas."""
    _, canvas = ctx.slide()
    _, nets = ctx.checked()
    shapes, skipped = build_shapes(nets, canvas, ctx.plan, ctx.seed)
    ctx.shapes = shapes
    runs = [(parse_variant(name), shape) for shape in shapes for name in ctx.plan.variants]
    done = _sweep(ctx.probe, nets, runs, ctx.plan, deadline)
    if done < len(runs):
        also = f"; skipped {', '.join(skipped)}" if skipped else ""
        return f"partial: {done} of {len(runs)} measurements{also}"
    return f"ok: skipped {', '.join(skipped)}" if skipped else "ok"


def stage_graphs(ctx: Context, deadline: float) -> str:
    """The fastest low-precision variant replayed as a CUDA graph, on every shape."""
    if ctx.device.type != "cuda":
        return "skipped: CUDA graphs need a CUDA device"
    _, nets = ctx.checked()
    base = ctx.probe.fastest_of(ctx.plan.low_precision)
    if base is None or not ctx.shapes:
        return "skipped: no passing low-precision variant"
    variant = parse_variant(base + "+graph")
    runs = [(variant, shape) for shape in ctx.shapes]
    done = _sweep(ctx.probe, nets, runs, ctx.plan, deadline)
    return f"partial: {done} of {len(runs)} shapes" if done < len(runs) else "ok"


def stage_compile(ctx: Context, deadline: float) -> str:
    """``torch.compile`` (default, then reduce-overhead on CUDA) of the fastest low-precision
    variant on the best dense shape, then the best exact one, while a compile still fits."""
    if ctx.no_compile or not ctx.plan.compile_stage:
        why = "--no-compile" if ctx.no_compile else "tiny plan (tests/test_gpu_probe.py compiles)"
        return f"skipped: {why}"
    _, nets = ctx.checked()
    probe, plan = ctx.probe, ctx.plan
    base = probe.fastest_of(plan.low_precision)
    if base is None or not ctx.shapes:
        return "skipped: no passing low-precision variant"
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
        run_variant(probe, nets, variant, shape, slice_s, plan)
    note = "backend eager (dynamo only) on the CPU" if ctx.device.type != "cuda" else ""
    return f"ok: {note}" if note else "ok"
