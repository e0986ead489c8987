"""Cohort throughput with one and with two local tritonservers: same slides, same client.

    python benchmarks/cohort_servers.py REPOSITORY SLIDE_DIR OUT

Starts two servers on REPOSITORY and runs ``wsi-infer`` over every ``*.tif`` in SLIDE_DIR in
each mode three times: with the first server, with both (``--url A --url B``), and with the
first again (the two one-server runs bracket the two-server one, so run-to-run drift shows).
Prints and writes OUT/results.json: seconds, tissue cells, cells/s and the servers that
answered. On one machine the servers share its cores: a second server adds capacity only
where the first left cores idle.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from wsi_tumor.serving.local_server import LocalTritonServer


def main() -> int:
    """Run the six cohorts; 0 when every run completed."""
    repository, slide_dir, out = (Path(arg) for arg in sys.argv[1:4])
    slides = sorted(str(path) for path in slide_dir.glob("*.tif"))
    infer = str(Path(sys.executable).parent / "wsi-infer")
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with LocalTritonServer(repository) as a, LocalTritonServer(repository) as b:
        for mode in ("exact", "dense"):
            runs = (("1 server", [a]), ("2 servers", [a, b]), ("1 server again", [a]))
            for name, servers in runs:
                dest = out / f"{mode}_{name.replace(' ', '_')}"
                urls = [arg for server in servers for arg in ("--url", server.grpc_url)]
                command = [infer, *slides, "--out", str(dest), "--mode", mode, *urls]
                started = time.perf_counter()
                subprocess.run([*command, "--overwrite", "--quiet"], check=True)
                seconds = time.perf_counter() - started
                reports = [json.loads(path.read_text()) for path in dest.glob("*.json")]
                reports = [report for report in reports if "counts" in report]
                cells = sum(report["counts"]["tissue_cells"] for report in reports)
                results[f"{mode}, {name}"] = {
                    "seconds": round(seconds, 1),
                    "cells": cells,
                    "cells_per_s": round(cells / seconds, 1),
                    "servers_answered": sorted({u for r in reports for u in r["servers"]}),
                }
                print(f"{mode}, {name}: {results[f'{mode}, {name}']}", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
