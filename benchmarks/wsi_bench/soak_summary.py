"""The soak's results document: what the cohort clients, perf_analyzer, the request streams
and the RSS sampler saw, merged into the JSON that ``report.md`` and the README table are
rendered from."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from wsi_bench.soak_report import clients_peak_mib, rss_summary


def progress(now: float, sampler: Any, streams: list[Any], clients: list[Any]) -> str:
    """One line on the run so far: requests sent, cohort runs, the server's memory."""
    sent = sum(sum(c.values()) for stream in streams for c in stream.counts.values())
    rss = sampler.samples[-1]["server_tree"] if sampler.samples else 0.0
    runs = sum(len(client.runs) for client in clients)
    return f"{now:5.0f} s: {sent} stream requests, {runs} cohort runs, server {rss:.0f} MiB"


def cohort_summary(clients: list[Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs, maps compared / changed / lost, requests and peak RSS of the cohort clients.

    A run cut at the grace limit loses no answer: its missing maps are counted as cut. The
    peak RSS is sampled: the ``peak_rss_mib`` a client reports is its ``ru_maxrss``, which
    Linux carries over from the parent at fork, so it reads the soak driver's RSS when that
    is larger (kept as ``reported_peak_rss_mib``).
    """
    runs = [run for client in clients for run in client.runs]
    maps = [s for run in runs for s in run["slides"]]
    cut = [s for run in runs if run["timed_out"] for s in run["slides"]]
    return {
        "runs": len(runs),
        "failed_runs": sum(r["exit_code"] != 0 and not r["timed_out"] for r in runs),
        "cut_runs": sum(bool(r["timed_out"]) for r in runs),
        "maps": len(maps),
        "compared": sum(s["status"] in ("same", "changed") for s in maps),
        "changed": sum(s["status"] == "changed" for s in maps),
        "lost": sum(s["status"] == "missing" for s in maps) - len(cut),
        "requests": sum(s.get("requests", 0) for s in maps),
        "peak_rss_mib": clients_peak_mib(samples),
        "reported_peak_rss_mib": max([s.get("peak_rss_mib", 0.0) for s in maps], default=None),
        "run_wall_s": [r["wall_s"] for r in runs],
        "iterations": runs,
    }


def perf_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """perf_analyzer runs (failed, cut at their window's end), requests of the complete
    ones, their median p50 and worst p99."""
    ok = [r for r in runs if "error" not in r and "cut" not in r]
    p50s = sorted(r["p50_ms"] for r in ok)
    return {
        "runs": len(runs),
        "failures": sum("error" in r for r in runs),
        "cut": sum("cut" in r for r in runs),
        "requests": sum(r["requests"] for r in ok),
        "p50_ms": p50s[len(p50s) // 2] if p50s else None,
        "p99_ms": max((r["p99_ms"] for r in ok), default=None),
        "details": runs,
    }


def stub_restarts(sampler: Any) -> int:
    """Stub processes that appeared after the first sample beside the ones it saw."""
    first = sampler.samples[0]["stubs"] if sampler.samples else {}
    started = {model: len(pids) for model, pids in sampler.stub_pids.items()}
    return sum(n - sum(label.startswith(f"{m}#") for label in first) for m, n in started.items())


def summarize(args: argparse.Namespace, measured: dict[str, Any], command: str) -> dict[str, Any]:
    """The results.json document."""
    from wsi_bench.soak_stream import summarize_streams

    stream = summarize_streams(measured["streams"], args.huge_mib)
    stream["generator_kinds"] = measured["generator"].kinds
    samples = measured["sampler"].samples
    cohort = cohort_summary(measured["clients"], samples)
    perf = perf_summary(measured["perf"])
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "duration_s": args.duration_s,
        "wall_s": round(measured["wall_s"], 1),
        "setup": {
            "clients": args.clients,
            "modes": [args.modes[i % len(args.modes)] for i in range(args.clients)],
            "slides": args.slides,
            "size": args.size,
            "seed": args.seed,
            "huge_mib": args.huge_mib,
            "pause_s": args.pause_s,
            "sample_s": args.sample_s,
            "perf": not args.skip_perf,
        },
        "machine": measured["machine"],
        "calibration": measured["calibration"],
        "windows": asdict(measured["windows"]),
        "stream": stream,
        "cohort": cohort,
        "perf": perf,
        "answers": {
            "compared": cohort["compared"] + stream["compared"],
            "changed": cohort["changed"] + stream["changed"],
            "lost": cohort["lost"] + stream["good_lost"],
        },
        "requests_answered": cohort["requests"] + perf["requests"]
        + stream["good_sent"] - stream["good_lost"],
        "server": {
            "alive_at_end": measured["alive"],
            "statistics": measured["statistics"],
            "stub_restarts": stub_restarts(measured["sampler"]),
        },
        "rss": {"growth": rss_summary(samples, measured["windows"]), "samples": samples},
    }  # fmt: skip
