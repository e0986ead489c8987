"""The check's stages, in order; each is ``(Context, deadline) -> note`` and fills the record.

prerequisites -> slides -> export -> server -> dense -> agreement -> exact -> dense_nvjpeg (the
agreement, which proves the maps, before the long exact pass that may be cut).
A stage that raises is recorded as failed and the ones that need its result skip.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_bench.budget import Budget, left
from wsi_bench.gpu_serve import environment, runs, serve
from wsi_bench.gpu_serve.slide import side_for, write_serve_slide
from wsi_tumor import contract

Json = dict[str, Any]
FP16_TOLERANCE = 1e-2
"""Max |probability difference| of the GPU's FP16 maps from the CPU's FP32 ones."""
FP32_TOLERANCE = 1e-4


@dataclass
class Plan:
    """Sizes of a run: the big slide's and the agreement slide's tiles a side (0: none, the
    big slide's maps are compared with the CPU's)."""

    name: str
    side_tiles: int
    agreement_tiles: int


FULL = Plan("full", side_for(260_000), 6)
"""152 x 152 tiles: 267,904 nominal tissue cells; the agreement slide, 6 x 6 (384 cells)."""
TINY = Plan("tiny", 4, 0)
"""4 x 4 tiles, 192 nominal tissue cells, for every stage (the CPU's exact pass is slow)."""


@dataclass
class Context:
    """What the stages share (set by earlier stages) and the record they fill."""

    plan: Plan
    cuda: bool
    bundle: Path | None
    work: Path
    checkpoint: Path | None
    client_options: list[str]
    budget: Budget
    record: Json = field(default_factory=dict)
    setup: environment.Setup | None = None
    slides: dict[str, Path] = field(default_factory=dict)
    repository: Path | None = None
    server: Any = None
    outputs: dict[str, Path] = field(default_factory=dict)

    def ready(self) -> tuple[environment.Setup, Any]:
        """The set-up and the running server (RuntimeError when a stage before failed)."""
        if self.setup is None or self.server is None:
            raise RuntimeError("no server: an earlier stage failed")
        return self.setup, self.server


def stage_prerequisites(ctx: Context, deadline: float) -> str:
    """The set-up (the bundle unpacked and checked, or this venv), then the GPU; a missing
    prerequisite prints one line naming it."""
    try:
        if ctx.bundle is not None:
            ctx.setup = environment.bundle_setup(ctx.bundle, ctx.work, ctx.cuda)
        else:
            ctx.setup = environment.local_setup()
            if ctx.cuda:
                ctx.setup.facts["gpu"] = environment.gpu()
    except environment.PrerequisiteError as exc:
        print(f"gpu_serve: missing prerequisite: {exc}", file=sys.stderr, flush=True)
        raise
    ctx.record["setup"] = {"kind": ctx.setup.kind, **ctx.setup.facts}
    return "ok"


def stage_slides(ctx: Context, deadline: float) -> str:
    """The big slide (and the agreement slide), and the checkpoint every run uses."""
    import torch

    from wsi_tumor.models import build_model

    if ctx.checkpoint is None:
        torch.manual_seed(0)
        ctx.checkpoint = ctx.work / "checkpoint.pt"
        torch.save({"model": build_model().state_dict()}, ctx.checkpoint)
        ctx.record["model"] = "random init, torch.manual_seed(0)"
    else:
        ctx.record["model"] = str(ctx.checkpoint)
    facts: Json = {}
    start = time.perf_counter()
    ctx.slides["big"] = ctx.work / "serve_slide.tif"
    facts["big"] = write_serve_slide(ctx.slides["big"], ctx.plan.side_tiles, seed=1)
    if ctx.plan.agreement_tiles:
        ctx.slides["small"] = ctx.work / "agreement_slide.tif"
        facts["small"] = write_serve_slide(ctx.slides["small"], ctx.plan.agreement_tiles, seed=2)
    else:
        ctx.slides["small"] = ctx.slides["big"]
    facts["write_s"] = time.perf_counter() - start
    ctx.record["slides"] = facts
    return "ok"


def stage_export(ctx: Context, deadline: float) -> str:
    """``wsi-export --runtime python-torch`` (GPU instances on a GPU)."""
    if ctx.setup is None or ctx.checkpoint is None:
        raise RuntimeError("no set-up or checkpoint")
    ctx.repository = ctx.work / "model_repository"
    timeout = _essential(ctx, deadline)
    summary = serve.export(ctx.setup, ctx.checkpoint, ctx.repository, ctx.cuda, timeout)
    ctx.record["export"] = summary
    return "ok"


def stage_server(ctx: Context, deadline: float) -> str:
    """tritonserver on the exported repository, ready."""
    if ctx.setup is None or ctx.repository is None:
        raise RuntimeError("no repository")
    start = time.perf_counter()
    log_path = ctx.work / "tritonserver.log"
    ctx.server = serve.start_server(ctx.setup, ctx.repository, log_path, _essential(ctx, deadline))
    ctx.record["server"] = {"start_s": time.perf_counter() - start, "log": str(log_path)}
    return "ok"


def _essential(ctx: Context, deadline: float, minimum_s: float = 180.0) -> float:
    """Seconds an essential step may take: its slice, but at least ``minimum_s`` while the
    budget lasts (a slow first CUDA start must not fail the run; later stages get less)."""
    return min(ctx.budget.remaining(), max(left(deadline), minimum_s))


def _run_mode(
    ctx: Context, name: str, mode: str, slide: Path, deadline: float, extra: list[str]
) -> Json:
    setup, server = ctx.ready()
    before = serve.model_stats(server)
    out = ctx.work / "runs" / name
    with serve.Sampler(server.pid) as sampler:
        run = runs.run_client(
            setup, slide, out, server.grpc_url, mode, [*ctx.client_options, *extra], deadline
        )
    cut = run["cut"] and run["report"] is None  # a slide finished at the deadline is whole
    result: Json = {"exit": run["exit"], "cut": cut, "log_tail": run["log_tail"]}
    ctx.record.setdefault("runs", {})[name] = result  # kept if the server fails from here on

    def since_start() -> Json:  # what each model did since the run began
        return serve.stats_delta(before, serve.model_stats(server))

    if run["report"] is not None:
        result.update(runs.breakdown(run, since_start(), sampler.summary()))
        ctx.outputs[name] = out / f"{slide.stem}.npy"
        return result
    if not cut:  # it ended by itself without its slide: _note says why
        return result
    progress = run["progress"] or {}
    result.update(
        partial_cells=progress.get("cells", 0),
        partial_s=run["wall_s"],
        partial_cells_per_s=progress.get("cells_per_s"),
        client={"peak_rss_mib": run["peak_rss_mib"]},
        **sampler.summary(),
    )
    # the server still works through the killed client's requests: let it finish them
    result["drain"] = _drain(ctx, since_start())
    result["server_models"] = since_start()  # the drained requests included
    return result


def _drain(ctx: Context, delta: Json) -> Json:
    """Wait (at most a quarter of the budget left) for the server to finish a cut run's requests,
    so that they neither slow the next stage nor count in its statistics."""
    per_execution = max((m["compute_infer_s"] / max(m["executions"], 1) for m in delta.values()),
                        default=0.0)  # fmt: skip
    _, server = ctx.ready()
    timeout_s, settle_s = ctx.budget.remaining() / 4, max(2.0, 1.5 * per_execution)
    return serve.wait_idle(server, timeout_s, settle_s)


def stage_dense(ctx: Context, deadline: float) -> str:
    """``wsi-infer --mode dense`` on the big slide."""
    result = _run_mode(ctx, "dense", "dense", ctx.slides["big"], deadline, [])
    return _note(result)


def stage_exact(ctx: Context, deadline: float) -> str:
    """``wsi-infer --mode exact`` (the ensemble) on the big slide."""
    if "exact" in ctx.outputs:
        return "ok: run by the agreement stage (the plan's slides are one)"
    result = _run_mode(ctx, "exact", "exact", ctx.slides["big"], deadline, [])
    return _note(result)


def stage_dense_nvjpeg(ctx: Context, deadline: float) -> str:
    """The dense run again with the client decoding on the GPU (reader nvjpeg)."""
    if not ctx.cuda:
        return "skipped: nvJPEG needs a GPU"
    result = _run_mode(ctx, "dense_nvjpeg", "dense", ctx.slides["big"], deadline,
                       ["--reader", "nvjpeg"])  # fmt: skip
    return _note(result)


def _note(result: Json) -> str:
    """ "ok", "partial: ..." for a run cut at its deadline; a failed run raises."""
    if result["cut"]:
        seconds, cells = result["partial_s"], result["partial_cells"]
        if not cells:
            raise RuntimeError(f"cut after {seconds:.0f} s before its first answer")
        rate = result["partial_cells_per_s"]
        at_rate = f", {rate:,.0f} cells/s between the first and last answer" if rate else ""
        drain = result["drain"]
        busy = "" if drain["idle"] else f"; server not idle {drain['waited_s']:.0f} s later"
        return f"partial: cut after {seconds:.0f} s with {cells:,} cells answered{at_rate}{busy}"
    if "cells" not in result:  # no slide report
        raise RuntimeError(f"wsi-infer exited {result['exit']}: {' / '.join(result['log_tail'])}")
    return "ok"


def stage_agreement(ctx: Context, deadline: float) -> str:
    """Both modes' served maps of the small slide against a CPU FP32 run of the checkpoint."""
    if ctx.checkpoint is None:
        raise RuntimeError("no checkpoint")
    small = ctx.slides["small"]
    served = {}
    for mode in contract.MODES:
        if small == ctx.slides["big"] and mode in ctx.outputs:
            served[mode] = ctx.outputs[mode]
            continue
        # one slide (the tiny plan): the run is the mode's own, and its stage reuses it
        name = mode if small == ctx.slides["big"] else f"agreement_{mode}"
        _run_mode(ctx, name, mode, small, deadline, [])
        if name not in ctx.outputs:
            raise RuntimeError(f"no {mode} map of the agreement slide")
        served[mode] = ctx.outputs[name]
    reference = runs.reference_maps(small, ctx.checkpoint)
    tolerance = FP16_TOLERANCE if ctx.cuda else FP32_TOLERANCE
    found = {
        mode: runs.agreement(np.load(served[mode]), reference[mode], tolerance)
        for mode in contract.MODES
    }
    ctx.record["agreement"] = found
    failed = [mode for mode, result in found.items() if not result["passed"]]
    if failed:
        raise RuntimeError(f"maps differ from the CPU's beyond {tolerance:g}: {', '.join(failed)}")
    return "ok"


Stage = Callable[[Context, float], str]
STAGES: tuple[tuple[str, Stage, float], ...] = (
    ("prerequisites", stage_prerequisites, 0.10),
    ("slides", stage_slides, 0.06),
    ("export", stage_export, 0.10),
    ("server", stage_server, 0.12),
    ("dense", stage_dense, 0.15),
    ("agreement", stage_agreement, 0.12),
    ("exact", stage_exact, 0.25),
    ("dense_nvjpeg", stage_dense_nvjpeg, 0.10),
)
"""(name, stage, share of the budget left when it starts, relative to the stages after it)."""
ESSENTIAL = ("prerequisites", "slides", "export", "server", "dense", "agreement")


def cpu_count() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0))
