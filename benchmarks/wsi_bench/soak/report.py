"""The soak's arithmetic, verdict and reports (``report.md``, ``rss.png``).

A run of D seconds: warm-up is the first third (W = D / 3 unless given); *baseline* is the
median over [W, W + 0.1 D], *final* the median over the last 0.1 D, growth = (final -
baseline) / baseline; the *trend* is the least-squares slope through the medians of 20 bins
of the last third (a passing spike does not tilt it), with its 95 % interval (Student's t).
perf_analyzer runs only in the warm-up and between the baseline and the last third. A run
passes when growth <= 5 % and the trend's interval includes 0 or lies under 1 MiB/min: a
plateau passes, a leak of a MiB a minute does not, however slow the runner.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from wsi_tumor.fileio import write_text

MAX_GROWTH = 0.05
MAX_SLOPE = 1.0
"""MiB/min: a trend whose 95 % interval lies above 0 and reaches this fails."""
BINS = 20


@dataclass(frozen=True)
class Windows:
    """Where a run's warm-up, baseline, final, trend and perf_analyzer windows lie (s)."""

    warmup_s: float
    baseline: tuple[float, float]
    final: tuple[float, float]
    trend: tuple[float, float]
    perf: tuple[tuple[float, float], ...]


def plan_windows(d: float, warmup_s: float | None = None) -> Windows:
    """The windows of a run of ``d`` seconds (warm-up a third unless given)."""
    warm = d / 3 if warmup_s is None else warmup_s
    baseline = (warm, min(d, warm + 0.1 * d))
    middle = (baseline[1] + 0.05 * d, 2 * d / 3 - 0.05 * d)
    perf = ((0.25 * warm, warm), *([middle] if middle[1] > middle[0] else []))
    return Windows(warm, baseline, (0.9 * d, d), (2 * d / 3, d), perf)


def trend(t: Any, v: Any, window: tuple[float, float]) -> tuple[float, float, float] | None:
    """(slope, low, high) in MiB/min over ``window``: a least-squares line through the
    medians (time and value) of :data:`BINS` bins, with its 95 % interval; None with under
    3 bins filled."""
    from scipy import stats

    edges = np.linspace(window[0], window[1], BINS + 1)
    inside = (t >= window[0]) & (t <= window[1])
    groups = [g for i in range(BINS) if (g := inside & (np.digitize(t, edges[1:-1]) == i)).any()]
    x, y = [np.median(t[g]) for g in groups], [np.median(v[g]) for g in groups]
    if len(x) < 3:
        return None
    if np.ptp(y) == 0:
        return 0.0, 0.0, 0.0
    fit = stats.linregress(x, y)
    half = float(stats.t.ppf(0.975, len(x) - 2)) * fit.stderr
    slope, low, high = (round(60 * s, 3) for s in (fit.slope, fit.slope - half, fit.slope + half))
    return slope, low, high


def growth(times: Sequence[float], values: Sequence[float], w: Windows) -> dict[str, Any]:
    """Baseline, final, peak, relative growth (None where a window is empty) and trend."""
    t, v = np.asarray(times, float), np.asarray(values, float)

    def median(a: float, b: float) -> float | None:
        inside = v[(t >= a) & (t <= b)]
        return round(float(np.median(inside)), 1) if inside.size else None

    base, final = median(*w.baseline), median(*w.final)
    fit = trend(t, v, w.trend)
    return {
        "baseline": base,
        "final": final,
        "peak": float(v.max()) if v.size else None,
        "growth": (final - base) / base if base and final is not None else None,
        "slope": fit and fit[0],
        "slope_ci": fit and fit[1:],
    }


def series(samples: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Aligned series (0 where a process was absent): ``t``, ``tree``, ``pool``, then
    ``<process> heap`` and ``<process> files`` per process, the server first."""
    procs = sorted({p for s in samples for p in s["procs"]}, key=lambda p: (p != "server", p))
    out = {key: [s[key] for s in samples] for key in ("t", "tree", "pool")}
    for proc, kind in ((p, k) for p in procs for k in ("heap", "files")):
        out[f"{proc} {kind}"] = [s["procs"].get(proc, {}).get(kind, 0.0) for s in samples]
    return out


def verdict(results: dict[str, Any], max_growth: float = MAX_GROWTH) -> list[str]:
    """Why the soak failed (empty when it passed)."""
    answers, tree = results["answers"], results["memory"]["growth"]["tree"]
    reasons = [f"{answers[k]} good answers {k}" for k in ("changed", "lost") if answers[k]]
    if results["stream"]["bad_accepted"]:
        reasons.append(f"{results['stream']['bad_accepted']} malformed requests were answered OK")
    if tree["growth"] is None or tree["slope"] is None:
        reasons.append("server memory growth could not be measured (too few samples)")
    else:
        if tree["growth"] > max_growth:
            reasons.append(f"server memory grew {tree['growth']:.1%} after warm-up "
                           f"(limit {max_growth:.0%})")  # fmt: skip
        low, high = tree["slope_ci"]
        if low > 0 and high >= MAX_SLOPE:
            reasons.append(f"server memory still grows over the last third: {tree['slope']:+.2f} "
                           f"MiB/min (95 % interval {low:+.2f} to {high:+.2f}; it must include "
                           f"0 or lie under {MAX_SLOPE:g})")  # fmt: skip
    if not results["server"]["alive_at_end"]:
        reasons.append("the server was not running at the end")
    return reasons


def percentiles(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, p50 and p99 in milliseconds."""
    ms = np.asarray(seconds, float) * 1000.0
    p50, p99 = (round(float(np.percentile(ms, q)), 1) if ms.size else None for q in (50, 99))
    return {"n": int(ms.size), "p50_ms": p50, "p99_ms": p99}


def stream_summary(streams: Sequence[Any]) -> dict[str, Any]:
    """The request streams' tallies merged."""
    counts: dict[str, Counter[str]] = {}
    largest: Counter[str] = Counter()
    for stream in streams:
        for kind, statuses in stream.counts.items():
            counts.setdefault(kind, Counter()).update(statuses)
        largest |= Counter(stream.largest)
    bad = [v for k, v in counts.items() if k.startswith("bad:")]
    good = [v for k, v in counts.items() if k.startswith("good:")]
    return {
        "by_kind": {k: dict(v) for k, v in sorted(counts.items())},
        "bad_kinds": sorted(k for k in counts if k.startswith("bad:")),
        "bad_sent": sum(sum(v.values()) for v in bad),
        "bad_by_status": dict(sum(bad, Counter())),
        "bad_accepted": sum(v["OK"] for v in bad),
        "good_sent": sum(sum(v.values()) for v in good),
        "good_lost": sum(n for v in good for s, n in v.items() if s != "OK"),
        "compared": sum(s.compared for s in streams),
        "changed": sum(s.changed for s in streams),
        "latency": percentiles([x for s in streams for x in s.latencies]),
        "largest_mib": {k: round(v / 2**20, 1) for k, v in sorted(largest.items())},
        "examples": dict(sorted(e for s in streams for e in s.examples.items())),
    }


def summarize(args: argparse.Namespace, measured: dict[str, Any], command: str) -> dict[str, Any]:
    """The results.json document (without the verdict). Cohort runs cut at the grace limit
    lose no map; the largest client request is estimated from each slide's regions."""
    sampler, windows = measured["sampler"], measured["windows"]
    samples = sampler.samples
    stream = stream_summary(measured["streams"]) | {"generator_kinds": measured["kinds"]}
    runs = [run for client in measured["clients"] for run in client.runs]
    maps = [s for run in runs for s in run["slides"]]
    cohort = {
        "runs": len(runs),
        "failed_runs": sum(r["exit_code"] not in (0, None) for r in runs),
        "maps": len(maps),
        "compared": sum(s["status"] in ("same", "changed") for s in maps),
        "changed": sum(s["status"] == "changed" for s in maps),
        "lost": sum(s["status"] == "missing" for r in runs if r["exit_code"] is not None
                    for s in r["slides"]),
        "requests": sum(s.get("requests", 0) for s in maps),
        "largest_request_mib": round(max([s.get("largest", 0) for s in maps] or [0]) / 2**20, 1),
        "peak_rss_mib": max((v for s in samples for v in s["clients"].values()), default=None),
    }  # fmt: skip
    ok = [r for r in measured["perf"] if "error" not in r and "cut" not in r]
    perf = {
        "runs": len(measured["perf"]),
        "failures": sum("error" in r for r in measured["perf"]),
        "cut": sum("cut" in r for r in measured["perf"]),
        "requests": sum(r["requests"] for r in ok),
        "p50_ms": sorted(r["p50_ms"] for r in ok)[len(ok) // 2] if ok else None,
        "p99_ms": max((r["p99_ms"] for r in ok), default=None),
    }
    columns = series(samples)
    t = columns.pop("t")
    stubs = len(samples[0]["procs"]) - 1 if samples else 0
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "duration_s": args.duration_s,
        "wall_s": round(measured["wall_s"], 1),
        "setup": {k: getattr(args, k) for k in ("clients", "modes", "slides", "size", "quick",
                                                 "allocator", "pool")},
        "machine": measured["machine"],
        "calibration": measured["calibration"],
        "windows": asdict(windows),
        "stream": stream,
        "cohort": cohort,
        "perf": perf,
        "answers": {k: cohort[k] + stream[k] for k in ("compared", "changed")}
        | {"lost": cohort["lost"] + stream["good_lost"]},
        "requests_answered": cohort["requests"] + perf["requests"] + stream["good_sent"]
        - stream["good_lost"],
        "server": {
            "alive_at_end": measured["alive"],
            "stub_restarts": sum(map(len, sampler.stub_pids.values())) - stubs,
            "allocator": measured["allocator"],
            "pool": measured["pool"],
        },
        "memory": {
            "growth": {k: growth(t, v, windows) for k, v in columns.items()},
            "samples": samples,
        },
    }  # fmt: skip


CHART_NAME = "rss.png"


def _f(value: float | None, spec: str = ",.0f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _trend(g: dict[str, Any]) -> str:
    low, high = g["slope_ci"] or (None, None)
    return f"{_f(g['slope'], '+.2f')} ({_f(low, '+.2f')} to {_f(high, '+.2f')})"


def readme_table(results: dict[str, Any]) -> str:
    """The README reliability table."""
    s, a, c, p = results["stream"], results["answers"], results["cohort"], results["perf"]
    g, server = results["memory"]["growth"], results["server"]
    tree = g["tree"]
    moved = {k: v["final"] - v["baseline"] for k, v in g.items()
             if k != "tree" and v["final"] is not None and v["baseline"] is not None}  # fmt: skip
    top = sorted(moved, key=lambda k: -abs(moved[k]))[:3]
    last = (results["memory"]["samples"] or [{"regions": 0, "region_mib": 0.0}])[-1]
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(s["bad_by_status"].items()))
    ceiling = f"{server['pool']['ceiling_bytes'] / 2**20:.0f} MiB" if server["pool"] else "none"
    rows = [
        ("run", f"`{results['command']}`: {results['duration_s']:.0f} s of load "
         f"({results['wall_s']:.0f} s wall), {results['setup']['clients']} cohort client(s), "
         f"{results['machine']['logical_cores']} cores, classifier "
         f"{results['calibration'].get('patches_per_s', 'n/a')} patches/s"),
        ("load held", f"{results['requests_answered']:,} requests answered: {c['requests']:,} "
         f"from {c['runs']} cohort runs ({c['maps']} slide maps), {p['requests']:,} from "
         f"{p['runs']} perf_analyzer runs, {s['good_sent']:,} good stream requests"),
        ("bad inputs tried", f"{s['bad_sent']:,} malformed requests of {len(s['bad_kinds'])} "
         f"kinds (largest {max(s['largest_mib'].values(), default=0):.0f} MiB): {statuses}; "
         f"{s['bad_accepted']} answered OK"),
        ("faults survived", f"server up at the end: {server['alive_at_end']}; stub restarts "
         f"{server['stub_restarts']}; failed cohort runs {c['failed_runs']}; perf_analyzer "
         f"failures {p['failures']} (cut at their window's end: {p['cut']})"),
        ("nothing lost", f"{a['compared']:,} good answers compared bit for bit: "
         f"{a['changed']} changed, {a['lost']} lost"),
        ("server memory after warm-up", f"server + stubs + pool {_f(tree['growth'], '+.1%')} "
         f"({_f(tree['baseline'])} -> {_f(tree['final'])} MiB); trend over the last third "
         f"{_trend(tree)} MiB/min (95 % interval)"),
        ("where it moved", "; ".join(f"{k} {moved[k]:+,.0f} MiB" for k in top) or "n/a"),
        ("bounds", f"allocator {server['allocator']}; pool {last['regions']} regions of "
         f"{last['region_mib']:,.0f} MiB (ceiling {ceiling}); largest client request "
         f"{c['largest_request_mib']:,.0f} MiB; client RSS peak {_f(c['peak_rss_mib'])} MiB"),
        ("latency (good stream requests)", f"p50 {_f(s['latency']['p50_ms'], unit=' ms')}, "
         f"p99 {_f(s['latency']['p99_ms'], unit=' ms')} (n = {s['latency']['n']}); "
         f"perf_analyzer p50 {_f(p['p50_ms'], unit=' ms')}, p99 {_f(p['p99_ms'], unit=' ms')}"),
    ]  # fmt: skip
    return "\n".join(["| soak | figure |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def render_markdown(results: dict[str, Any], reasons: list[str]) -> str:
    """report.md."""
    s, w, m = results["stream"], results["windows"], results["machine"]
    perf = ", ".join(f"[{a:.0f}, {b:.0f}] s" for a, b in w["perf"])
    out = [
        "# Soak report", "",
        f"{results['date']}: **{'FAIL: ' + '; '.join(reasons) if reasons else 'PASS'}**", "",
        "## README table", "", readme_table(results), "",
        f"Warm-up: the first {w['warmup_s']:.0f} s; baseline = median over "
        f"[{w['baseline'][0]:.0f}, {w['baseline'][1]:.0f}] s, final = median over "
        f"[{w['final'][0]:.0f}, {w['final'][1]:.0f}] s; trend over "
        f"[{w['trend'][0]:.0f}, {w['trend'][1]:.0f}] s; "
        f"perf_analyzer ran in {perf}.", "",
        "## Memory by part (MiB; private pages per process, the pool once)", "",
        f"![memory over time]({CHART_NAME})", "",
        "| part | baseline | final | peak | growth | trend, last third (MiB/min, 95 %) |",
        "|---|---|---|---|---|---|",
        *(f"| {name} | {_f(g['baseline'])} | {_f(g['final'])} | {_f(g['peak'])} | "
          f"{_f(g['growth'], '+.1%')} | {_trend(g)} |"
          for name, g in results["memory"]["growth"].items()),
        "", "## Requests by kind and status (the soak's own streams)", "",
        "| kind | status: count |", "|---|---|",
        *(f"| {kind} | {', '.join(f'{k}: {v}' for k, v in st.items())} |"
          for kind, st in s["by_kind"].items()),
        "", "Largest request per model and answer: "
        + ", ".join(f"{k} {v:,.1f} MiB" for k, v in s["largest_mib"].items()) + ".", "",
        "## What the server said (first message per kind, model and status)", "",
        *(f"- `{key}`: {message}" for key, message in s["examples"].items()),
        "", "## Machine", "",
        f"{m['cpu_model']}, {m['logical_cores']} logical cores, {m['memory_gib']} GiB, "
        f"{m['os']}, Python {m['python']}; load average at start {m['load_average']}; "
        f"tritonserver {m['versions'].get('tritonserver')}.", "",
    ]  # fmt: skip
    return "\n".join(out)


def write_reports(results: dict[str, Any], out: Path, reasons: list[str]) -> Path:
    """rss.png (the memory stacked by part: the pool, each process's heap, all mapped
    files, the windows) and report.md; results.json is the caller's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns, w = series(results["memory"]["samples"]), results["windows"]
    t, tree = columns.pop("t"), columns.pop("tree")
    files = [k for k in columns if k.endswith(" files")]
    layers = {"shared pool": columns.pop("pool")}
    layers |= {k: v for k, v in columns.items() if k.endswith(" heap")}
    layers["mapped files (all)"] = list(np.sum([columns[k] for k in files], axis=0))
    fig, ax = plt.subplots(figsize=(11, 6))
    ax.stackplot(t, *layers.values(), labels=list(layers), alpha=0.8)
    ax.plot(t, tree, color="black", linewidth=1.2, label="server + stubs + pool")
    ax.axvline(w["warmup_s"], color="grey", linestyle="--", label="end of warm-up")
    for i, (a, b) in enumerate(w["perf"]):
        ax.axvspan(a, b, color="orange", alpha=0.12, label="perf_analyzer" if i == 0 else None)
    for a, b in (w["baseline"], w["trend"]):
        ax.axvspan(a, b, color="green", alpha=0.08)
    ax.set(xlabel="seconds since the load started", ylabel="MiB (private pages; pool once)",
           title="make soak: server memory by part (green: baseline, last third)")  # fmt: skip
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / CHART_NAME, dpi=110)
    plt.close(fig)
    return write_text(out / "report.md", render_markdown(results, reasons))
