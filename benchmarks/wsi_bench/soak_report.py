"""The soak's arithmetic and its report: windows, RSS growth, percentiles, verdict, markdown,
the RSS chart and the README table.

Windows of a run of D seconds: warm-up is the first W = min(max(60 s, 0.2 D), 0.5 D)
seconds; the *baseline* is the median RSS over [W, W + 0.1 D], the *final* level the median
over the last 0.1 D, and growth = (final - baseline) / baseline. perf_analyzer runs inside
the warm-up and in the middle of the run, never in the baseline or final window, so the two
medians compare the same load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_tumor.fileio import write_text

MAX_GROWTH = 0.05
"""Largest allowed RSS growth of the server tree after warm-up."""
CHART_NAME = "rss.png"


@dataclass(frozen=True)
class Windows:
    """Where a run's warm-up, baseline, final and perf_analyzer windows lie (seconds)."""

    duration_s: float
    warmup_s: float
    baseline: tuple[float, float]
    final: tuple[float, float]
    perf: tuple[tuple[float, float], ...]


def plan_windows(duration_s: float, warmup_s: float | None = None) -> Windows:
    """The windows of a run of ``duration_s`` (warm-up by the rule above unless given)."""
    warm = min(max(60.0, 0.2 * duration_s), 0.5 * duration_s) if warmup_s is None else warmup_s
    tail = 0.1 * duration_s
    baseline = (warm, min(duration_s, warm + tail))
    perf = [(0.25 * warm, warm)]
    if duration_s - 2 * tail > baseline[1] + tail:
        perf.append((baseline[1] + tail, duration_s - 2 * tail))
    return Windows(duration_s, warm, baseline, (duration_s - tail, duration_s), tuple(perf))


def growth(
    times: Sequence[float], values: Sequence[float], windows: Windows
) -> dict[str, float | None]:
    """Baseline, final, peak and relative growth of one RSS series (None where a window is
    empty or the baseline is 0), and its least-squares trend over the second half of the
    run in MiB/min (a leak keeps climbing; a high-water mark after a burst does not)."""
    t = np.asarray(times, float)
    v = np.asarray(values, float)

    def median(window: tuple[float, float]) -> float | None:
        inside = v[(t >= window[0]) & (t <= window[1])]
        return float(np.median(inside)) if inside.size else None

    base, final = median(windows.baseline), median(windows.final)
    change = (final - base) / base if base and final is not None else None
    half = (t >= windows.duration_s / 2) & (t <= windows.duration_s)
    slope = float(np.polyfit(t[half], v[half], 1)[0]) * 60.0 if half.sum() >= 3 else None
    return {
        "start": float(v[0]) if v.size else None,
        "baseline": base,
        "final": final,
        "peak": float(v.max()) if v.size else None,
        "growth": change,
        "trend_mib_per_min": None if slope is None else round(slope, 2),
    }


def percentiles(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50 and p99 in milliseconds."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p99_ms": None}
    ms = np.asarray(seconds, float) * 1000.0
    return {
        "n": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def rss_series(samples: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Per series (server_tree, server, stub:<label>, clients, perf_analyzer, driver): values
    aligned with the samples (0 where a process was absent)."""
    stubs = sorted({label for s in samples for label in s["stubs"]})
    series: dict[str, list[float]] = {"t": [s["t"] for s in samples]}
    for key in ("server_tree", "server", "shm_pool", "server_rss_sum"):
        series[key] = [s[key] for s in samples]
    for label in stubs:
        series[f"stub:{label}"] = [s["stubs"].get(label, 0.0) for s in samples]
    series["clients"] = [sum(s["clients"].values()) for s in samples]
    series["perf_analyzer"] = [s["perf_analyzer"] for s in samples]
    series["driver"] = [s["driver"] for s in samples]
    return series


def rss_summary(samples: Sequence[dict[str, Any]], windows: Windows) -> dict[str, Any]:
    """Growth of the server tree, the server process, each stub and this process."""
    series = rss_series(samples)
    keys = [
        k
        for k in series
        if k in ("server_tree", "server", "shm_pool", "server_rss_sum", "driver")
        or k.startswith("stub:")
    ]
    return {key: growth(series["t"], series[key], windows) for key in keys}


def clients_peak_mib(samples: Sequence[dict[str, Any]]) -> float | None:
    """Largest sampled RSS of any one cohort client process tree."""
    return max((v for s in samples for v in s["clients"].values()), default=None)


def verdict(results: dict[str, Any], max_growth: float = MAX_GROWTH) -> list[str]:
    """Why the soak failed (empty when it passed)."""
    reasons = []
    answers = results["answers"]
    if answers["changed"]:
        reasons.append(f"{answers['changed']} good answers changed")
    if answers["lost"]:
        reasons.append(f"{answers['lost']} good answers lost")
    if results["stream"]["bad_accepted"]:
        reasons.append(f"{results['stream']['bad_accepted']} malformed requests were answered OK")
    tree = results["rss"]["growth"].get("server_tree", {}).get("growth")
    if tree is None:
        reasons.append("server memory growth could not be measured (too few samples)")
    elif tree >= max_growth:
        reasons.append(f"server memory grew {tree:.1%} after warm-up (limit {max_growth:.0%})")
    if not results["server"]["alive_at_end"]:
        reasons.append("the server was not running at the end")
    return reasons


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def readme_table(results: dict[str, Any]) -> str:
    """The README reliability table: load held, bad inputs, faults, answers, memory, latency."""
    s, a, c, p = results["stream"], results["answers"], results["cohort"], results["perf"]
    rss = results["rss"]["growth"]
    stubs = {k: v["growth"] for k, v in rss.items() if k.startswith("stub:")}
    worst = max(stubs, key=lambda k: abs(stubs[k] or 0.0)) if stubs else None
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(s["bad_by_status"].items()))
    lat = s["good_latency"]
    rows = [
        ("run", f"`{results['command']}`: {results['duration_s']:.0f} s of load "
         f"({results['wall_s']:.0f} s wall), {results['setup']['clients']} cohort client(s), "
         f"{results['machine']['logical_cores']} cores"),
        ("load held", f"{results['requests_answered']:,} requests answered: {c['requests']:,} "
         f"from {c['runs']} cohort runs ({c['maps']} slide maps), {p['requests']:,} from "
         f"{p['runs']} perf_analyzer runs, {s['good_sent']:,} good stream requests"),
        ("bad inputs tried", f"{s['bad_sent']:,} malformed requests of {len(s['bad_kinds'])} "
         f"kinds (largest {s['largest_mib']:.0f} MiB): {statuses}; "
         f"{s['bad_accepted']} answered OK"),
        ("faults survived", f"server up at the end: {results['server']['alive_at_end']}; "
         f"stub restarts {results['server']['stub_restarts']}; failed cohort runs "
         f"{c['failed_runs']}; perf_analyzer failures {p['failures']} (cut at their window's "
         f"end: {p['cut']})"),
        ("nothing lost", f"{a['compared']:,} good answers compared bit for bit: "
         f"{a['changed']} changed, {a['lost']} lost"),
        ("server memory after warm-up", f"server + stubs private + shared pool "
         f"{_pct(rss['server_tree']['growth'])} ({_mib(rss['server_tree']['baseline'])} -> "
         f"{_mib(rss['server_tree']['final'])} MiB; trend over the second half "
         f"{rss['server_tree']['trend_mib_per_min']} MiB/min); server process private "
         f"{_pct(rss['server']['growth'])}, shared pool {_pct(rss['shm_pool']['growth'])}"
         + (f", largest stub change {worst[5:]} {_pct(stubs[worst])}" if worst else "")
         + f"; RSS summed over the tree (pool counted twice) "
         f"{_pct(rss['server_rss_sum']['growth'])}"),
        ("client RSS", f"cohort client peak {_mib(c['peak_rss_mib'])} MiB (sampled); soak "
         f"driver (streams, perf_analyzer's parent) "
         f"{_mib(rss['driver']['baseline'])} -> {_mib(rss['driver']['final'])} MiB "
         f"({_pct(rss['driver']['growth'])})"),
        ("latency (good stream requests)", f"p50 {_ms(lat['p50_ms'])}, p99 "
         f"{_ms(lat['p99_ms'])} (n = {lat['n']}); perf_analyzer p50 {_ms(p['p50_ms'])}, p99 "
         f"{_ms(p['p99_ms'])} ({p['runs'] - p['failures'] - p['cut']} complete runs)"),
    ]  # fmt: skip
    lines = ["| soak | figure |", "|---|---|"]
    lines += [f"| {name} | {text} |" for name, text in rows]
    return "\n".join(lines)


def render_markdown(results: dict[str, Any], reasons: list[str], chart: str) -> str:
    """report.md: verdict, README table, errors by kind, huge requests, RSS, machine."""
    s, w = results["stream"], results["windows"]
    out = [
        "# Soak report",
        "",
        f"{results['date']}: **{'FAIL: ' + '; '.join(reasons) if reasons else 'PASS'}**",
        "",
        "## README table",
        "",
        readme_table(results),
        "",
        f"Warm-up: the first {w['warmup_s']:.0f} s; RSS baseline = median over "
        f"[{w['baseline'][0]:.0f}, {w['baseline'][1]:.0f}] s, final = median over "
        f"[{w['final'][0]:.0f}, {w['final'][1]:.0f}] s; perf_analyzer ran in "
        + ", ".join(f"[{a:.0f}, {b:.0f}] s" for a, b in w["perf"])
        + ".",
        "",
        "## Requests by kind and status (the soak's own stream)",
        "",
        "| kind | status: count |",
        "|---|---|",
    ]
    for kind, statuses in sorted(s["by_kind"].items()):
        out.append(f"| {kind} | " + ", ".join(f"{k}: {v}" for k, v in statuses.items()) + " |")
    out += ["", "## What the server said (first message of each kind, model and status)", ""]
    out += [f"- `{key}`: {message}" for key, message in sorted(s["examples"].items())]
    out += ["", "## Huge requests", "", s["huge_note"], ""]
    out += ["## RSS (MiB)", "", f"![RSS over time]({chart})", ""]
    out += [
        "| process | start | baseline | final | peak | growth | trend, 2nd half (MiB/min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, g in results["rss"]["growth"].items():
        out.append(
            f"| {name} | {_mib(g['start'])} | {_mib(g['baseline'])} | {_mib(g['final'])} | "
            f"{_mib(g['peak'])} | {_pct(g['growth'])} | {g['trend_mib_per_min']} |"
        )
    out += ["", "## Triton's counts over the run (statistics API)", ""]
    out += ["| model | success | fail |", "|---|---|---|"]
    for model, row in sorted(results["server"]["statistics"].items()):
        out.append(f"| {model} | {row['success']:,} | {row['fail']:,} |")
    m = results["machine"]
    out += [
        "",
        "## Machine",
        "",
        f"{m['cpu_model']}, {m['logical_cores']} logical cores, {m['memory_gib']} GiB, "
        f"{m['os']}, Python {m['python']}; load average at start {m['load_average']}; "
        f"tritonserver {m['versions'].get('tritonserver')}; classifier alone on the idle "
        f"server: {results['calibration'].get('patches_per_s', 'not measured')} patches/s.",
        "",
    ]
    return "\n".join(out)


def render_chart(results: dict[str, Any], path: Path) -> Path:
    """RSS over time: server tree, server process, each stub, clients, this process."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = rss_series(results["rss"]["samples"])
    w = results["windows"]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for key, values in series.items():
        if key == "t":
            continue
        width = 2.2 if key == "server_tree" else 1.0
        ax.plot(series["t"], values, label=key.replace("stub:", ""), linewidth=width)
    ax.axvline(w["warmup_s"], color="grey", linestyle="--", label="end of warm-up")
    for i, (a, b) in enumerate(w["perf"]):
        ax.axvspan(a, b, color="orange", alpha=0.12, label="perf_analyzer" if i == 0 else None)
    for a, b in (w["baseline"], w["final"]):
        ax.axvspan(a, b, color="green", alpha=0.10)
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title("make soak: resident memory (green: baseline and final windows)")
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(results: dict[str, Any], out: Path, reasons: list[str]) -> Path:
    """results.json is written by the caller; this writes rss.png and report.md."""
    render_chart(results, out / CHART_NAME)
    return write_text(out / "report.md", render_markdown(results, reasons, CHART_NAME))
