"""One probe run: every stage in order within its slice of the budget, the report rewritten
after each, and the watchdog that cuts a stage still running past the budget."""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from wsi_bench.gpu_probe import ProbeError
from wsi_bench.gpu_probe.budget import Budget, Watchdog
from wsi_bench.gpu_probe.config import Json, select_plan
from wsi_bench.gpu_probe.context import Context
from wsi_bench.gpu_probe.decode import stage_decode_cpu, stage_decode_device
from wsi_bench.gpu_probe.pipeline import stage_pipeline, stage_tiler
from wsi_bench.gpu_probe.projection import project_probe
from wsi_bench.gpu_probe.reference import load_network, stage_check, stage_reference
from wsi_bench.gpu_probe.report import Probe, environment, write_report
from wsi_bench.gpu_probe.sweep import stage_compile, stage_graphs, stage_network
from wsi_bench.gpu_probe.synthetic import stage_slide
from wsi_bench.gpu_probe.tiff_jpeg import read_jpeg_tiles

logger = logging.getLogger(__name__)

Stage = Callable[[Context, float], str | None]
"""A stage: (the run's context, its monotonic deadline) -> a note ("ok", "partial: ...",
"skipped: ...", "ok: ..."); an exception marks it failed."""

STAGES: tuple[tuple[str, Stage], ...] = (
    ("slide", stage_slide),
    ("decode_cpu", stage_decode_cpu),
    ("decode_device", stage_decode_device),
    ("reference", stage_reference),
    ("check", stage_check),
    ("network", stage_network),
    ("graphs", stage_graphs),
    ("tiler", stage_tiler),
    ("pipeline", stage_pipeline),
    ("compile", stage_compile),
)
"""The stages in order (budget.STAGE_SHARES gives their shares)."""

ESSENTIAL = ("reference", "check")
"""Stages that must have run (ok or partial) for a run to pass."""


class StageRunner:
    """Runs stages within their slices, records their status and rewrites the report.

    Args:
        ctx: The run's context (its probe is the record).
        out: The report folder.
        on_abandon: Called with the stage's name after the watchdog recorded it (the script
            ends the process there).
    """

    def __init__(
        self, ctx: Context, out: Path, on_abandon: Callable[[str], None] | None = None
    ) -> None:
        self.ctx = ctx
        self.out = out
        self.current = "?"
        then = None if on_abandon is None else (lambda: on_abandon(self.current))
        self.watchdog = Watchdog(ctx.budget, self._abandon, then)

    def write(self) -> Json:
        """Write the report as it stands (callers hold the watchdog's lock)."""
        return write_report(self.ctx.probe, self.out, self.ctx.budget, self.ctx.grids)

    def _abandon(self, note: str) -> None:
        """The watchdog (under its lock): a stage is still running GRACE_S past the budget."""
        probe, name = self.ctx.probe, self.current
        probe.stages[name] = {
            "status": "abandoned",
            "seconds": 0.0,
            "note": note,
            "at_s": self.ctx.budget.elapsed(),
        }
        probe.abandoned, probe.passed = True, False
        logger.warning("stage %s abandoned: %s", name, note)
        for _ in range(3):  # a stage may be changing a dict while this serialises it
            try:
                self.write()
                break
            except RuntimeError:
                time.sleep(0.05)

    def run(self, name: str, fn: Stage) -> None:
        """Run one stage with its slice of the budget; record its status, rewrite the report.

        A stage may overrun its slice; the watchdog bounds the run at the budget + GRACE_S.
        """
        ctx, probe = self.ctx, self.ctx.probe
        if self.watchdog.fired:
            probe.stages.setdefault(
                name, {"status": "skipped", "seconds": 0.0, "note": "after an abandoned stage"}
            )
            return
        if ctx.budget.remaining() <= 0.5:
            probe.stages[name] = {"status": "skipped", "seconds": 0.0, "note": "budget spent"}
            return
        deadline = ctx.budget.stage_deadline(name)
        t0 = time.monotonic()
        self.current = name
        logger.info("stage %s (%.0f s of %.0f s left)", name, deadline - t0, ctx.budget.remaining())
        try:
            with torch.no_grad():
                note = fn(ctx, deadline) or "ok"
            head = note.split(":")[0]
            status = head if head in ("partial", "skipped") else "ok"
        except Exception as exc:  # recorded; later stages that need its results skip
            status, note = "failed", f"{type(exc).__name__}: {exc}"[:800]
            logger.warning("stage %s failed: %s\n%s", name, note, traceback.format_exc(limit=4))
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
        with self.watchdog.lock:
            if self.watchdog.fired:
                return
            probe.stages[name] = {
                "status": status,
                "seconds": time.monotonic() - t0,
                "note": "" if note == "ok" else note,
            }
            self.write()

    def finish(self, passed: bool) -> Probe:
        """Stop the watchdog, set the verdict (never a pass after an abandoned stage), write."""
        self.watchdog.cancel()
        with self.watchdog.lock:
            probe = self.ctx.probe
            probe.passed = passed and not probe.abandoned
            self.write()
        return probe


def resolve_device(choice: str) -> torch.device:
    """The device of ``--device`` ("auto": CUDA when torch sees one).

    Raises:
        ProbeError: for "cuda" without a CUDA device.
    """
    if choice == "cuda" and not torch.cuda.is_available():
        raise ProbeError("--device cuda: torch sees no CUDA device")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def run(
    args: argparse.Namespace,
    argv: Sequence[str],
    on_abandon: Callable[[str], None] | None = None,
) -> Probe:
    """Every stage in order, each within its slice; the report is rewritten after each.

    Args:
        args: The parsed command line (:func:`wsi_bench.gpu_probe.cli.build_parser`).
        argv: The arguments it was parsed from (recorded in the report).
        on_abandon: Called with the stage's name when the watchdog cuts a stage.

    Raises:
        ProbeError: on a bad option, slide or checkpoint (checked before any stage runs).
    """
    tiny = args.quick or args.cpu_tiny
    device = resolve_device("cpu" if args.cpu_tiny else args.device)
    plan = select_plan(tiny, device.type)
    budget = Budget(args.budget_s if args.budget_s is not None else (15.0 if tiny else 420.0))
    config = {
        "plan": plan.name,
        "device": str(device),
        "budget_s": budget.total_s,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "slide": str(args.slide) if args.slide else None,
        "seed": args.seed,
        "argv": list(argv),
    }
    if args.slide is not None:  # bad inputs are usage errors (exit 2), not stage failures
        if not args.slide.is_file():
            raise ProbeError(f"{args.slide}: no such file")
        read_jpeg_tiles(args.slide, plan.canvas)
    if args.checkpoint is not None:
        load_network(args.checkpoint, args.seed)
    probe = Probe(config=config, environment=environment(device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory(prefix="gpu_probe_") as scratch:
        grids: dict[str, Any] = {}
        ctx = Context(
            plan=plan,
            device=device,
            budget=budget,
            probe=probe,
            grids=grids,
            seed=args.seed,
            checkpoint=args.checkpoint,
            slide_in=args.slide,
            slide_out=args.slide_out,
            scratch=Path(scratch),
            no_compile=args.no_compile,
        )
        runner = StageRunner(ctx, args.out, on_abandon)
        for name, fn in STAGES:
            runner.run(name, fn)
            if name == "slide" and ctx.tileset is None:
                return runner.finish(False)
            if name == "reference" and ctx.reference is None:
                return runner.finish(False)
        probe.projection = project_probe(probe, device.type)
        essential = all(
            probe.stages.get(s, {}).get("status") in ("ok", "partial") for s in ESSENTIAL
        )
        return runner.finish(
            bool(essential and probe.checks and all(c["passed"] for c in probe.checks))
        )
