"""``make soak``: a bounded load-and-soak run of the real server, written as a report.

For ``--duration-s`` seconds (default 600) the real ``tritonserver`` serves at once
``--clients`` cohort clients (``wsi-infer`` over synthetic slides, modes in turn from
``--modes``), perf_analyzer in two windows and two streams of the soak's own requests,
malformed and good, while its memory is sampled by part. Writes ``results.json``,
``report.md`` and ``rss.png`` to ``--out``. Exit codes: 0 passed; 1 a good answer changed or
was lost, a malformed request was answered OK, the server died, or its memory grew
(:mod:`~wsi_bench.soak.report`); 2 bad flags.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsi_bench.soak.report import plan_windows
from wsi_tumor.commandline import EXIT_OK, make_parser, run_command
from wsi_tumor.errors import EXIT_FAILURE, ConfigError, ServerError
from wsi_tumor.fileio import write_json
from wsi_tumor.serving.memory import ALLOCATORS, pool_settings

log = logging.getLogger(__name__)
QUIET = ("wsi_tumor.export", "wsi_tumor.data", "wsi_tumor.slide", "wsi_tumor.serving")


def build_parser() -> argparse.ArgumentParser:
    """Flags of the soak."""
    parser = make_parser("run_soak", __doc__)
    add = parser.add_argument
    add("--duration-s", type=float, default=None, help="load time (600; 60 quick)")
    add("--clients", type=int, default=None, help="cohort clients (3; 1 quick)")
    add("--modes", type=lambda text: text.split(","), default=["exact", "dense"],
        help="client modes in turn (exact, dense)")  # fmt: skip
    add("--slides", type=int, default=2, help="slides per cohort")
    add("--size", type=int, default=2048, help="synthetic slide side (px)")
    add("--out", type=Path, default=Path("benchmarks/results/soak"))
    add("--workdir", type=Path, default=None, help="keep work files here")
    add("--repository", type=Path, default=None, help="serve this exported repository")
    add("--allocator", choices=ALLOCATORS, default="auto", help="the server's malloc")
    add("--pool", choices=("contract", "triton"), default="contract",
        help="Python-backend pool: from the contract, or Triton's defaults")  # fmt: skip
    add("--quick", action="store_true", help="60 s, 1 client, 16 MiB requests, no calibration")
    return parser


def measure(args: argparse.Namespace, slides: list[Path], repository: Path, workdir: Path) -> Any:
    """Start the server, run the load for ``--duration-s``, return what the threads saw."""
    from wsi_bench.machine import describe_machine
    from wsi_bench.perf_analyzer import run_perf_analyzer
    from wsi_bench.soak.load import Clock, CohortClient, MemorySampler, PerfLoop, RequestStream
    from wsi_bench.soak.requests import CLASSIFIER, MIB, BadRequestGenerator, good_requests
    from wsi_tumor.serving.local_server import LocalTritonServer

    windows = plan_windows(args.duration_s)
    pool = pool_settings() if args.pool == "contract" else None
    server = LocalTritonServer(repository, log_path=workdir / "tritonserver.log",
                               allocator=args.allocator, pool=pool)  # fmt: skip
    with server:
        assert server.pid is not None and server.memory is not None  # started
        url = server.grpc_url
        machine = describe_machine(server.http_url)
        calibration: dict[str, Any] = {}  # the classifier's patches/s on the idle server
        with contextlib.suppress(ServerError):
            if not args.quick:
                result = run_perf_analyzer(
                    CLASSIFIER, url, batch_size=32, request_count=3, report=workdir / "idle.csv"
                )
                calibration = {"batch_size": 32, "patches_per_s": round(result.patches_per_s, 1)}
        clock = Clock(time.monotonic(), args.duration_s, max(120.0, 0.5 * args.duration_s))
        pids: dict[str, int] = {}
        sampler = MemorySampler(server.pid, pids, clock, 1.0 if args.quick else 2.0)
        bad = BadRequestGenerator(0, (16 if args.quick else 64) * MIB)
        goods = good_requests(0)
        # the canary (the first good request) twice, then between the others, so even a
        # short run under load compares answers with their reference
        others = itertools.cycle(goods[1:])
        good = itertools.chain(goods[:1], (r for g in others for r in (goods[0], g)))
        first: dict[Any, Any] = {}
        workers: list[Any] = [
            RequestStream("bad", url, itertools.chain(bad.round(), iter(bad.random, None)),
                          clock, 0.1, 600.0),
            RequestStream("good", url, good, clock, 0.05, 600.0),
            *(CohortClient(i, args.modes[i % len(args.modes)], slides, url, workdir, clock,
                           first, pids) for i in range(args.clients)),
        ]  # fmt: skip
        perf = PerfLoop(url, list(windows.perf), clock, workdir, 8 if args.quick else 16,
                        4 if args.quick else 10)  # fmt: skip
        workers.append(perf)
        sampler.start()
        try:
            for worker in workers:
                worker.start()
            note = 0.0
            while any(worker.is_alive() for worker in workers):
                time.sleep(1.0)
                if clock.now() >= note and sampler.samples:
                    log.info("%5.0f s: server %.0f MiB", clock.now(), sampler.samples[-1]["tree"])
                    note += 60.0
        finally:
            clock.stop.set()  # on an error or SIGTERM: clients kill their wsi-infer processes
            for worker in workers:
                worker.join(timeout=5.0)
            sampler.done.set()
            sampler.join(timeout=30)
        alive = server.running
    return {
        "machine": machine, "calibration": calibration, "windows": windows, "alive": alive,
        "wall_s": clock.now(), "streams": workers[:2], "clients": workers[2:2 + args.clients],
        "perf": perf.runs, "sampler": sampler, "kinds": bad.kinds,
        "allocator": server.memory.name, "pool": pool and vars(pool),
    }  # fmt: skip


def run(args: argparse.Namespace, command: str) -> int:
    """The whole soak; returns the exit code."""
    from wsi_bench.prepare import synth_and_export
    from wsi_bench.soak.report import readme_table, summarize, verdict, write_reports

    args.duration_s = args.duration_s or (60.0 if args.quick else 600.0)
    args.clients = (1 if args.quick else 3) if args.clients is None else args.clients
    if args.duration_s <= 0 or args.clients < 0 or args.slides < 1:
        raise ConfigError("--duration-s and --slides must be positive, --clients >= 0")
    if not set(args.modes) <= {"exact", "dense"}:
        raise ConfigError(f"--modes must be a comma list of exact and dense, got {args.modes}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wsi-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        slides, _, repository = synth_and_export(
            workdir, slides=args.slides, size=args.size, seed=0, checkpoint=None
        )
        measured = measure(args, slides, args.repository or repository, workdir)
        results = summarize(args, measured, command)
    results["total_s"] = round(time.monotonic() - started, 1)
    reasons = verdict(results)
    results["verdict"] = {"passed": not reasons, "reasons": reasons}
    write_json(args.out / "results.json", results)
    report = write_reports(results, args.out, reasons)
    print(readme_table(results))
    print(f"report: {report} ({results['total_s']:.0f} s)")
    for reason in reasons:
        print(f"soak FAILED: {reason}", file=sys.stderr)
    return EXIT_FAILURE if reasons else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; 0 passed, 1 failed (see the module docstring), 2 bad flags."""
    # SIGTERM unwinds like an error, so the server, its stubs and the clients are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    shown = list(sys.argv[1:] if argv is None else argv)
    command = "make soak" if not shown else "benchmarks/run_soak.py " + shlex.join(shown)
    # the export's and the slide readers' progress lines say nothing about the soak
    loggers = {logging.getLogger(name): logging.getLogger(name).level for name in QUIET}
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        return run_command("run_soak", build_parser(), lambda a: run(a, command), argv,
                           log_format="%(asctime)s %(name)s: %(message)s")  # fmt: skip
    finally:
        for logger, level in loggers.items():
            logger.setLevel(level)
