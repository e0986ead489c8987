"""``python3 benchmarks/gpu_serve.py``: the command line, the run of the stages, the verdict.

Exit status: 0 when every essential stage ran and the maps agree with the CPU's, 1 otherwise
(a missing prerequisite prints one line first), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from wsi_bench import machine
from wsi_bench.budget import Budget, Watchdog, run_stage
from wsi_bench.gpu_serve import stages
from wsi_bench.gpu_serve.report import REPORT_MD, write_report

logger = logging.getLogger("wsi_bench.gpu_serve")


def build_parser() -> argparse.ArgumentParser:
    """The check's command line."""
    parser = argparse.ArgumentParser(
        prog="gpu_serve", description="tritonserver + wsi-infer on a gigapixel slide, measured"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default="auto",
        help="where the server's instances run (auto: cuda where torch sees a GPU)",
    )
    parser.add_argument(
        "--bundle", type=Path, default=None, help="the carried .gpu-bundle (default: this venv)"
    )
    parser.add_argument("--tiny", action="store_true", help="a small slide: the suite's mode")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds all stages share; a run past its slice is cut (default 420, tiny 150)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/gpu_serve"),
        help="where gpu_serve.json and gpu_serve.md go (also copied to $OUT when set)",
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: random init")
    parser.add_argument("--readers", type=int, default=None, help="default: cores, at most 16")
    parser.add_argument("--inflight", type=int, default=None, help="default: 2 x readers")
    parser.add_argument("--reader", default="auto", help="wsi-infer --reader (default auto)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default tmp)")
    return parser


def _environment(cuda: bool) -> dict[str, object]:
    import torch
    import torchvision

    env: dict[str, object] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpu_count": stages.cpu_count(),
        "device_name": machine.cpu_model(),
    }
    if cuda:
        env["device_name"] = torch.cuda.get_device_name(0)
    return env


def run(
    args: argparse.Namespace, argv: Sequence[str], on_abandon: Callable[[], None] | None = None
) -> dict[str, object]:
    """Every stage in order within its slice; the report is rewritten after each."""
    budget = Budget(args.budget_s or (150.0 if args.tiny else 420.0),
                    {name: share for name, _, share in stages.STAGES})  # fmt: skip
    import torch  # counted in the budget: the device's first import is slow

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    plan = stages.TINY if args.tiny else stages.FULL
    readers = args.readers or min(16, stages.cpu_count())
    options = ["--readers", str(readers), "--inflight", str(args.inflight or 2 * readers)]
    if args.reader != "auto":
        options += ["--reader", args.reader]
    config: dict[str, object] = {"plan": plan.name, "device": "cuda" if cuda else "cpu"}
    config.update(budget_s=budget.total_s, bundle=args.bundle, client_options=options)
    record: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {**config, "argv": list(argv)},
        "environment": _environment(cuda),
        "stages": {},
    }
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_serve_"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = stages.Context(plan, cuda, args.bundle, work, args.checkpoint, options, budget, record)

    def abandon() -> None:  # the watchdog: stop the server's process group, keep the record
        record["abandoned"] = True
        write_report(record, args.out)
        if ctx.server is not None:
            ctx.server.kill()
        if on_abandon is not None:
            on_abandon()

    def note_cut(note: str) -> None:
        record["watchdog"] = note

    watchdog = Watchdog(budget, note_cut, abandon)
    try:
        for name, stage, _ in stages.STAGES:
            run_stage(name, stage, ctx, budget, record["stages"])  # type: ignore[arg-type]
            record["elapsed_s"] = budget.elapsed()
            with watchdog.lock:
                write_report(record, args.out)
            if name == "prerequisites" and ctx.setup is None:
                break
    finally:
        watchdog.cancel()
        if ctx.server is not None:
            ctx.server.stop()
    _copy_logs(work)
    statuses = {name: s["status"] for name, s in record["stages"].items()}  # type: ignore[attr-defined]
    record["passed"] = all(statuses.get(n) in ("ok", "partial") for n in stages.ESSENTIAL)
    record["elapsed_s"] = budget.elapsed()
    write_report(record, args.out)
    return record


def _copy_logs(work: Path) -> None:
    """The server's and the client runs' logs to ``$OUT/gpu_serve_logs`` (a device call)."""
    target = os.environ.get("OUT")
    if not target or not Path(target).is_dir():
        return
    logs = Path(target) / "gpu_serve_logs"
    logs.mkdir(exist_ok=True)
    for path in [work / "tritonserver.log", *sorted((work / "runs").glob("*.log"))]:
        if path.is_file():
            shutil.copy2(path, logs / path.name)


def main(argv: Sequence[str] | None = None, hard_exit: bool = False) -> int:
    """Run the check, print the Markdown report; 0 when it passed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="gpu_serve %(relativeCreated)7.0f ms  %(message)s")
    logging.getLogger("wsi_bench").setLevel(logging.INFO)
    on_abandon = (lambda: os._exit(1)) if hard_exit else None
    record = run(args, argv, on_abandon)
    print((args.out / REPORT_MD).read_text())
    print(
        f"gpu_serve: report in {args.out}" + (" (copied to $OUT)" if os.environ.get("OUT") else "")
    )
    return 0 if record.get("passed") else 1
