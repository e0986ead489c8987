"""``python3 benchmarks/gpu_probe.py``: the command line and the run (every stage within its
slice of the budget, the report rewritten after each, the watchdog). Exit status: 0 when every
check passed, 1 otherwise (a failed check, a cut or failed essential stage), 2 on bad usage.
Importing this module is cheap; torch is imported when a run starts."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_bench.budget import Budget, Watchdog, run_stage
from wsi_bench.gpu_probe import ProbeError
from wsi_bench.gpu_probe.plan import FULL, TINY, Json

if TYPE_CHECKING:
    from wsi_bench.gpu_probe.report import Probe

logger = logging.getLogger("wsi_bench.gpu_probe")
STAGES = {"slide": ("decode", 0.06), "decode_cpu": ("decode", 0.08),
          "decode_device": ("decode", 0.08), "reference": ("reference", 0.07),
          "check": ("reference", 0.05), "network": ("sweep", 0.33),
          "compile": ("sweep", 0.33)}  # fmt: skip
"""The stages in run order: ``stage_<name>`` of ``wsi_bench.gpu_probe.<module>``, and its
share of the budget left when it starts."""
ESSENTIAL = ("reference", "check")
"""Stages that must have run (ok or partial) for a run to pass."""


def run(args: argparse.Namespace, argv: Sequence[str], then: Callable[[], None] | None) -> Probe:
    """Every stage in order within its slice; the report is rewritten after each.

    Raises:
        ProbeError: on a bad option or checkpoint (checked before any stage runs).
    """
    import torch

    from wsi_bench.gpu_probe.reference import load_network
    from wsi_bench.gpu_probe.report import Probe, project_probe, write_report
    from wsi_bench.gpu_probe.state import Context
    from wsi_bench.machine import torch_environment

    tiny, choice = args.quick or args.cpu_tiny, "cpu" if args.cpu_tiny else args.device
    if choice == "cuda" and not torch.cuda.is_available():
        raise ProbeError("--device cuda: torch sees no CUDA device")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    device, plan = torch.device(choice), TINY if tiny else FULL
    if args.checkpoint is not None:
        load_network(args.checkpoint, args.seed)  # a usage error, before any stage
    stages = {n: getattr(importlib.import_module(f"wsi_bench.gpu_probe.{m}"), f"stage_{n}")
              for n, (m, _) in STAGES.items()}  # fmt: skip
    environment = torch_environment(device)
    budget = Budget(
        args.budget_s or (15.0 if tiny else 420.0), {n: s for n, (_, s) in STAGES.items()}
    )
    checkpoint = str(args.checkpoint) if args.checkpoint else None
    config = {"plan": plan.name, "device": str(device), "budget_s": budget.total_s,
              "checkpoint": checkpoint, "seed": args.seed, "argv": list(argv)}  # fmt: skip
    probe = Probe(config=config, environment=environment)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="gpu_probe_") as scratch:
        ctx = Context(plan, device, budget, probe, args.seed, args.checkpoint, Path(scratch))
        ctx.no_compile = args.no_compile
        current = ["?"]

        def write() -> None:
            write_report(probe, args.out, budget.elapsed(), ctx.grids)

        def abandon(note: str) -> None:  # the watchdog, under its lock
            record = {"status": "abandoned", "seconds": 0.0, "note": note, "at_s": budget.elapsed()}
            probe.stages[current[0]] = record
            probe.abandoned = True
            logger.warning("stage %s abandoned: %s", current[0], note)
            write()

        watchdog = Watchdog(budget, abandon, then)
        for name, stage in stages.items():
            current[0], record = name, dict[str, Json]()
            if not watchdog.fired:
                with torch.no_grad():
                    status = run_stage(name, stage, ctx, budget, record)
                if status == "failed" and device.type == "cuda":
                    torch.cuda.empty_cache()
            with watchdog.lock:
                if watchdog.fired:  # the abandoned stage keeps its record
                    probe.stages.setdefault(name, {"status": "skipped", "seconds": 0.0})
                    continue
                probe.stages.update(record)
                write()
        watchdog.cancel()
        if ctx.block is not None and ctx.reference is not None:
            probe.projection = project_probe(probe, device.type)
        ok = all(probe.stages.get(s, {}).get("status") in ("ok", "partial") for s in ESSENTIAL)
        with watchdog.lock:
            checks = bool(probe.checks) and all(c["passed"] for c in probe.checks)
            probe.passed = ok and checks and not probe.abandoned
            write()
    return probe


def build_parser() -> argparse.ArgumentParser:
    """The probe's command line."""
    parser = argparse.ArgumentParser(
        prog="gpu_probe",
        description="GPU probe: decode and network throughput of both paths on one GPU.",
    )
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="seconds (default 420; 15 when tiny)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_probe"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the chosen device")
    parser.add_argument("--cpu-tiny", action="store_true", help="tiny sizes on the CPU (tests)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: random init")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, hard_exit: bool = False) -> int:
    """Run the probe and print its Markdown report; 0 when every check passed.

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).
        hard_exit: Let the watchdog end the process (as the script does).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from wsi_bench.gpu_probe.report import REPORT_MD

    if not logging.getLogger().handlers:
        logging.basicConfig(format="gpu_probe %(relativeCreated)6.0f ms  %(message)s")
    logging.getLogger("wsi_bench").setLevel(logging.WARNING if args.quiet else logging.INFO)

    def exit_now() -> None:  # the script's watchdog action: end at once, the report written
        print(f"gpu_probe: a stage was abandoned; report in {args.out}", flush=True)
        os._exit(1)

    try:
        probe = run(args, argv, exit_now if hard_exit else None)
    except ProbeError as exc:
        print(f"gpu_probe: {exc}", file=sys.stderr)
        return 2
    print((args.out / REPORT_MD).read_text())
    print(f"gpu_probe: report in {args.out} (and $OUT where set)")
    return 0 if probe.passed else 1
