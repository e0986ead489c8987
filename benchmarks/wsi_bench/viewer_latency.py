"""Tile latency of a real ``wsi-view``: median and p95 of cold and cached Deep Zoom tiles.

Starts ``wsi-view OUT_DIR`` (a child process on a free loopback port), opens one slide's
page data (which opens the slide file), then requests a seeded random sample of tiles from
the slide's finest Deep Zoom levels one at a time: first each tile once (cold: cut from the
slide by a worker, JPEG-encoded), then the same tiles again in another order (cached). One
request at a time, so the figures are latencies, not queueing. The operating system's file
cache is warm for the second and later reads of a region: "cold" means "not in the viewer's
tile cache".

Usage::

    python benchmarks/run_viewer_latency.py OUT_DIR [--slides DIR] [--slide NAME]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FINEST_LEVELS = 4
"""Deep Zoom levels sampled, counted from the finest (where a viewer spends its requests)."""


def _fetch(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        size = len(response.read())
    return time.perf_counter() - start, size


def summarise(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p95 and mean in milliseconds."""
    ms = sorted(1000.0 * s for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(p95, 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def sample_tiles(dzi: dict[str, Any], count: int, seed: int) -> list[tuple[int, int, int]]:
    """Up to ``count`` (level, column, row) tiles of the finest :data:`FINEST_LEVELS`."""
    image = dzi["Image"]
    size = (int(image["Size"]["Width"]), int(image["Size"]["Height"]))
    side = int(image["TileSize"])
    dims = [size]  # the Deep Zoom levels, halving (rounding up) down to one pixel
    while dims[-1] != (1, 1):
        dims.append((max(1, math.ceil(dims[-1][0] / 2)), max(1, math.ceil(dims[-1][1] / 2))))
    dims.reverse()
    tiles = []
    for level in range(max(0, len(dims) - FINEST_LEVELS), len(dims)):
        cols, rows = (math.ceil(n / side) for n in dims[level])
        tiles += [(level, c, r) for c in range(cols) for r in range(rows)]
    rng = random.Random(seed)
    return rng.sample(tiles, min(count, len(tiles)))


def measure(
    out: Path, slides: Sequence[Path], slide: str | None, count: int, seed: int
) -> dict[str, Any]:
    """Run ``wsi-view`` on ``out`` and time ``count`` tiles cold then cached."""
    command = [sys.executable, "-m", "wsi_tumor.viewer.cli", str(out), "--port", "0", "--quiet"]
    for folder in slides:
        command += ["--slides", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split(" at ")[-1].strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"wsi-view did not start: {url!r}")
        with urllib.request.urlopen(url + "api/cohort", timeout=60) as response:
            rows = json.loads(response.read())["slides"]
        names = [r["name"] for r in rows if r["slide_available"] and r["status"] == "complete"]
        name = slide or (names[0] if names else None)
        if name is None:
            raise RuntimeError(f"{out}: no complete slide with its slide file to measure")
        with urllib.request.urlopen(f"{url}api/slides/{name}", timeout=120) as response:
            facts = json.loads(response.read())
        tiles = sample_tiles(facts["slide"]["dzi"], count, seed)
        urls = [f"{url}slides/{name}/tiles/{level}/{c}_{r}.jpeg" for level, c, r in tiles]
        cold = [_fetch(u) for u in urls]
        random.Random(seed + 1).shuffle(urls)
        cached = [_fetch(u) for u in urls]
        overlay = [_fetch(f"{url}slides/{name}/overlay.png?threshold=0.{i}")[0] for i in range(5)]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
    return {
        "slide": name,
        "level0_size": [facts["slide"]["width"], facts["slide"]["height"]],
        "reader": facts["slide"]["reader"]["reader"],
        "tiles": len(urls),
        "tile_kib_mean": round(statistics.fmean(size for _, size in cold) / 1024, 1),
        "cold": summarise([s for s, _ in cold]),
        "cached": summarise([s for s, _ in cached]),
        "overlay_png_first": summarise(overlay),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the latencies (and write them as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a wsi-infer --out directory")
    parser.add_argument("--slides", type=Path, action="append", default=[], metavar="DIR")
    parser.add_argument("--slide", default=None, help="slide name (default: the first)")
    parser.add_argument("--tiles", type=int, default=200, help="tiles sampled (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = measure(args.out, args.slides, args.slide, args.tiles, args.seed)
    text = json.dumps(result, indent=1)
    if args.json is not None:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0
