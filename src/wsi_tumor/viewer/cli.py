"""``wsi-view``: look at a cohort's slides, maps and lesion candidates in the browser.

Serves on 127.0.0.1 (another address only with ``--host``, with a warning: the viewer has
no login) and prints the URL. Runs until Ctrl-C (exit 130); exits with 2 at once on bad
flags or a directory that is not a cohort.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from wsi_tumor.commandline import EXIT_OK, add_logging_flags, make_parser, run_command
from wsi_tumor.errors import ConfigError
from wsi_tumor.slide import READER_CHOICES

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_WORKERS = 4
DEFAULT_CACHE_MB = 256


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``wsi-view``."""
    p = make_parser(
        "wsi-view",
        "A local web viewer of a wsi-infer cohort: slides by tumour score, each slide in deep "
        "zoom with its probability map, lesion candidates and ground truth.",
    )
    p.add_argument("out", type=Path, metavar="OUT_DIR", help="the wsi-infer --out directory")
    p.add_argument(
        "--slides",
        type=Path,
        nargs="+",
        action="extend",
        default=[],
        metavar="DIR",
        help="folders holding the slide files (default: the paths the reports recorded)",
    )
    p.add_argument(
        "--ground-truth",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of <slide>.xml (ASAP), <slide>.json (NCRF) or <slide>_mask.tif: "
        "drawn as outlines",
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="TCP port; 0 picks a free one (default: %(default)s)",
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default: %(default)s); any other is reachable by others",
    )
    p.add_argument(
        "--reader", default="auto", choices=READER_CHOICES, help="slide reader (default: auto)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="threads cutting tiles (default: %(default)s)",
    )
    p.add_argument(
        "--cache-mb",
        type=int,
        default=DEFAULT_CACHE_MB,
        help="tile cache cap in MiB (default: %(default)s)",
    )
    add_logging_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-view`` until interrupted; return its exit code."""
    return run_command("wsi-view", build_parser(), _serve, argv, interrupted="stopped")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from wsi_tumor.viewer.app import Viewer, create_app
    from wsi_tumor.viewer.cohort import Cohort
    from wsi_tumor.viewer.tiles import TileService

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535], got {args.port}")
    if args.workers < 1 or args.cache_mb < 0:
        raise ConfigError("--workers must be >= 1 and --cache-mb >= 0")
    if args.ground_truth is not None and not args.ground_truth.is_dir():
        raise ConfigError(f"--ground-truth {args.ground_truth}: not a directory")
    cohort = Cohort(args.out, args.slides)
    paths = {e.name: e.slide_path for e in cohort.entries.values() if e.slide_path is not None}
    tiles = TileService(paths, args.reader, args.workers, args.cache_mb << 20)
    loopback = is_loopback(args.host)
    if not loopback:
        log.warning(
            "listening on %s: anyone who can reach this address sees the cohort (no login)",
            args.host,
        )
    app = create_app(Viewer(cohort, tiles, args.ground_truth), loopback_only=loopback)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    config = uvicorn.Config(
        app, log_config=None, log_level=level, access_log=args.verbose, timeout_graceful_shutdown=2
    )
    failed = sum(e.status != "complete" for e in cohort.entries.values())
    sys.stdout.write(
        f"wsi-view: {len(cohort.entries)} slides ({failed} not complete) of {cohort.out} at "
        f"http://{shown}:{port}/\n"
    )
    sys.stdout.flush()
    uvicorn.Server(config).run(sockets=[sock])
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
