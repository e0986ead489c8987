"""``python3 benchmarks/gpu_probe.py``: the probe's command line and ``main``.

Exit status: 0 when every correctness check that ran passed, 1 otherwise (a failed check, a
cut or failed essential stage), 2 on bad usage (an option, slide or checkpoint it cannot use).
Importing this module is cheap; torch is imported when a run starts, so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from wsi_bench.gpu_probe import ProbeError
from wsi_bench.gpu_probe.config import REPORT_JSON, REPORT_MD

DESCRIPTION = (
    "GPU probe (issue 17): decode and network throughput of the dense and exact paths on one GPU."
)


def build_parser() -> argparse.ArgumentParser:
    """The probe's command line."""
    parser = argparse.ArgumentParser(prog="gpu_probe", description=DESCRIPTION)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="global time budget in seconds (default 420; 15 with --quick or --cpu-tiny)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/gpu_probe"),
        help="report folder (gpu_probe.json, gpu_probe.md, gpu_probe_grids.npz)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the chosen device")
    parser.add_argument(
        "--cpu-tiny",
        action="store_true",
        help="tiny sizes on the CPU: the test suite's mode (--quick --device cpu)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help='trained weights ({"model": state_dict}); default random init',
    )
    parser.add_argument(
        "--slide",
        type=Path,
        default=None,
        help="read this JPEG-tiled TIFF (page 0) instead of writing one",
    )
    parser.add_argument(
        "--slide-out",
        type=Path,
        default=None,
        help="keep the synthetic slide here (default: a temporary file)",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    return parser


def _exit_now(out: Path, stage: str) -> None:
    """The script's watchdog action: say which stage was cut and end the process at once."""
    print(f"gpu_probe: stage {stage} abandoned; report in {out}", flush=True)
    sys.stderr.flush()
    os._exit(1)


def main(argv: Sequence[str] | None = None, hard_exit: bool = False) -> int:
    """Run the probe; print the Markdown report; 0 when every check passed.

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).
        hard_exit: Let the watchdog end the process (as the script does).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="gpu_probe %(relativeCreated)6.0f ms  %(message)s")
    logging.getLogger("wsi_bench.gpu_probe").setLevel(
        logging.WARNING if args.quiet else logging.INFO
    )
    # torchvision 0.29 deprecates its JPEG codecs in favour of TorchCodec (not on the GPU image)
    for category in (UserWarning, DeprecationWarning):
        warnings.filterwarnings(
            "ignore", message=".*image decoding and encoding", category=category
        )
    from wsi_bench.gpu_probe.runner import run  # torch: after the arguments parsed

    on_abandon = (lambda stage: _exit_now(args.out, stage)) if hard_exit else None
    try:
        probe = run(args, argv, on_abandon)
    except ProbeError as exc:
        print(f"gpu_probe: {exc}", file=sys.stderr)
        return 2
    print((args.out / REPORT_MD).read_text())
    print(
        f"gpu_probe: report in {args.out}/{REPORT_JSON} and {REPORT_MD}"
        + (f" (copied to $OUT={os.environ['OUT']})" if os.environ.get("OUT") else "")
    )
    return 0 if probe.passed else 1
