"""``make soak``: a bounded load-and-soak run of the real server, written as a report.

For ``--duration-s`` seconds (default 600) the real ``tritonserver`` (``python-onnxruntime``
repository: ``tumor_detector``, ``tumor_detector_dense``, ``tumor_classifier``) serves, all
at once: ``--clients`` cohort clients (``wsi-infer`` processes over synthetic slides, in a
loop, modes taken in turn from ``--modes``), perf_analyzer in two windows, and a stream of
malformed requests with good ones interleaved (:mod:`~wsi_bench.soak_requests`).
Every good answer must equal, bit for bit, the first answer to the same question. Memory
of the server and of each Python-backend stub (private pages, plus the shared-memory pool
counted once) and the clients' RSS are sampled throughout; growth is measured after warm-up
(:mod:`~wsi_bench.soak_report`).

Writes ``results.json``, ``report.md`` and ``rss.png`` to ``--out``. Exit codes: 0 passed;
1 a good answer changed or was lost, a malformed request was answered OK, the server died,
or the server's memory grew by 5 % or more after warm-up; 2 bad flags.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsi_bench import BenchError
from wsi_bench.soak_report import MAX_GROWTH, plan_windows
from wsi_tumor import contract
from wsi_tumor.commandline import EXIT_OK, make_parser, run_command
from wsi_tumor.errors import EXIT_FAILURE, ConfigError
from wsi_tumor.fileio import write_json

log = logging.getLogger(__name__)

MODES = ("exact", "dense")
QUIET = ("wsi_tumor.export", "wsi_tumor.data", "wsi_tumor.slide", "wsi_tumor.serving")
"""Loggers held at WARNING during the soak."""


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise argparse.ArgumentTypeError(f"expected a comma list of {'/'.join(MODES)}: {text!r}")
    return modes


def build_parser() -> argparse.ArgumentParser:
    """Flags of the soak."""
    parser = make_parser("run_soak", __doc__)
    parser.add_argument("--duration-s", type=float, default=None, help="load time (600; 60 quick)")
    parser.add_argument("--clients", type=int, default=None, help="cohort clients (3; 1 quick)")
    parser.add_argument("--modes", type=_modes, default=list(MODES), help="client modes in turn")
    parser.add_argument("--slides", type=int, default=2, help="slides per cohort")
    parser.add_argument("--size", type=int, default=2048, help="synthetic slide side (px)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/soak"))
    parser.add_argument("--workdir", type=Path, default=None, help="keep work files here")
    parser.add_argument("--repository", type=Path, default=None, help="serve this exported repo")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: seeded weights")
    parser.add_argument("--warmup-s", type=float, default=None, help="default: see report")
    parser.add_argument("--huge-mib", type=float, default=None, help="largest request (64; 16)")
    parser.add_argument("--sample-s", type=float, default=None, help="sampling period (2; 1 quick)")
    parser.add_argument("--pause-s", type=float, default=0.1, help="pause between bad requests")
    parser.add_argument(
        "--request-timeout-s", type=float, default=600.0, help="deadline of a stream request"
    )
    parser.add_argument("--skip-perf", action="store_true", help="no perf_analyzer")
    parser.add_argument("--max-growth", type=float, default=MAX_GROWTH * 100, help="percent")
    parser.add_argument(
        "--quick", action="store_true", help="60 s, 1 client, small requests, no calibration"
    )
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on ``--quick``."""
    quick = args.quick

    def pick(value: Any, normal: Any, fast: Any) -> Any:
        return value if value is not None else (fast if quick else normal)

    args.duration_s = pick(args.duration_s, 600.0, 60.0)
    args.clients = pick(args.clients, 3, 1)
    args.huge_mib = pick(args.huge_mib, 64.0, 16.0)
    args.sample_s = pick(args.sample_s, 2.0, 1.0)
    if args.duration_s <= 0 or args.clients < 0 or args.slides < 1:
        raise ConfigError("--duration-s and --slides must be positive, --clients >= 0")
    return args


def prepare(args: argparse.Namespace, workdir: Path) -> tuple[list[Path], Path]:
    """Synthetic slides and (unless ``--repository``) an exported repository."""
    from wsi_bench.prepare import synth_and_export

    slides, _, repository = synth_and_export(
        workdir, slides=args.slides, size=args.size, seed=args.seed, checkpoint=args.checkpoint
    )
    return slides, args.repository or repository


def server_counts(url: str) -> dict[str, dict[str, int]]:
    """Per model: successful and failed requests so far (Triton's statistics API)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        raw = client.get_inference_statistics(as_json=True)
    finally:
        client.close()
    out = {}
    for model in raw.get("model_stats", []):
        stats = model.get("inference_stats", {})
        out[str(model["name"])] = {
            key: int(stats.get(key, {}).get("count", 0)) for key in ("success", "fail")
        }
    return out


def calibrate(url: str, workdir: Path) -> dict[str, Any]:
    """The classifier's patches/s on the idle server (batch 32, 3 requests)."""
    from wsi_bench.perf_analyzer import run_perf_analyzer
    from wsi_tumor.errors import ServerError

    try:
        result = run_perf_analyzer(
            contract.CLASSIFIER_MODEL, url, batch_size=32, request_count=3,
            report=workdir / "calibration.csv",
        )  # fmt: skip
    except ServerError as exc:
        return {"error": str(exc)}
    return {"batch_size": 32, "patches_per_s": round(result.patches_per_s, 1)}


def measure(args: argparse.Namespace, slides: list[Path], repository: Path, workdir: Path) -> Any:
    """Start the server, run the load for ``--duration-s``, return what the threads saw."""
    from wsi_bench.machine import describe_machine
    from wsi_bench.soak_load import Clock, CohortClient, PerfLoop, References, RssSampler
    from wsi_bench.soak_requests import MIB, BadRequestGenerator, good_requests
    from wsi_bench.soak_stream import RequestStream, bad_requests, good_cycle
    from wsi_bench.soak_summary import progress
    from wsi_tumor.serving.local_server import LocalTritonServer

    windows = plan_windows(args.duration_s, args.warmup_s)
    server = LocalTritonServer(repository, log_path=workdir / "tritonserver.log")
    with server:
        if server.pid is None:
            raise BenchError("tritonserver has no process id")
        url = server.grpc_url
        machine = describe_machine(server.http_url)
        skip_calibration = args.quick or args.skip_perf
        calibration = {} if skip_calibration else calibrate(url, workdir)
        before = server_counts(url)
        clock = Clock(time.monotonic(), args.duration_s, max(120.0, 0.5 * args.duration_s))
        pids: dict[str, int] = {}
        references = References()
        sampler = RssSampler(server.pid, pids, clock, args.sample_s)
        generator = BadRequestGenerator(args.seed, int(args.huge_mib * MIB))
        streams = [
            RequestStream(
                "bad-stream",
                url,
                bad_requests(generator),
                clock,
                pause_s=args.pause_s,
                timeout_s=args.request_timeout_s,
            ),
            RequestStream(
                "good-stream",
                url,
                good_cycle(good_requests(args.seed)),
                clock,
                timeout_s=args.request_timeout_s,
            ),
        ]
        clients = [
            CohortClient(i, args.modes[i % len(args.modes)], slides, url, workdir, clock,
                         references, pids)
            for i in range(args.clients)
        ]  # fmt: skip
        perf = PerfLoop(
            url, list(windows.perf), clock, workdir,
            batch_size=8 if args.quick else 16, request_count=4 if args.quick else 10,
        )  # fmt: skip
        workers = [*streams, *clients, *([] if args.skip_perf else [perf])]
        sampler.start()
        try:
            for worker in workers:
                worker.start()
            note = 0.0
            while any(worker.is_alive() for worker in workers):
                time.sleep(1.0)
                if clock.now() >= note:
                    log.info("%s", progress(clock.now(), sampler, streams, clients))
                    note += 60.0
        finally:
            clock.stop.set()  # on an error or SIGTERM: clients kill their wsi-infer processes
            for worker in workers:
                worker.join(timeout=5.0)
            sampler.done.set()
            sampler.join(timeout=30)
        wall = clock.now()
        alive = server.running
        after = server_counts(url) if alive else {}
    statistics = {
        model: {key: row[key] - before.get(model, {}).get(key, 0) for key in row}
        for model, row in after.items()
    }
    return {
        "machine": machine, "calibration": calibration, "windows": windows, "wall_s": wall,
        "alive": alive, "statistics": statistics, "streams": streams, "clients": clients,
        "perf": [] if args.skip_perf else perf.runs, "sampler": sampler, "generator": generator,
    }  # fmt: skip


def run(args: argparse.Namespace, command: str) -> int:
    """The whole soak; returns the exit code."""
    from wsi_bench.soak_report import readme_table, verdict, write_reports
    from wsi_bench.soak_summary import summarize

    args = resolve(args)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wsi-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        slides, repository = prepare(args, workdir)
        measured = measure(args, slides, repository, workdir)
        results = summarize(args, measured, command)
    results["total_s"] = round(time.monotonic() - started, 1)
    reasons = verdict(results, args.max_growth / 100.0)
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
    loggers = [logging.getLogger(name) for name in QUIET]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        return run_command(
            "run_soak",
            build_parser(),
            lambda args: run(args, command),
            argv,
            log_format="%(asctime)s %(name)s: %(message)s",
        )
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
