"""Agreement check, targets, the markdown report and the chart of one benchmark run."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_bench import BenchError, Target
from wsi_bench.prepare import SEEDED_WEIGHTS
from wsi_tumor import contract

AGREEMENT_TOLERANCE = 1e-4
"""Largest |probability difference| allowed between any two ways' maps."""


def check_agreement(
    maps: Mapping[str, npt.NDArray[np.float32]], tolerance: float = AGREEMENT_TOLERANCE
) -> dict[str, float]:
    """Max |difference| of every pair of maps; raise when one exceeds ``tolerance``.

    Returns:
        ``{"a-b": diff, ...}`` for every pair, in key order.

    Raises:
        BenchError: on different shapes or a difference above ``tolerance`` (naming both).
    """
    diffs: dict[str, float] = {}
    for (name_1, map_1), (name_2, map_2) in itertools.combinations(sorted(maps.items()), 2):
        if map_1.shape != map_2.shape:
            raise BenchError(
                f"maps {name_1} {map_1.shape} and {name_2} {map_2.shape} differ in shape"
            )
        diffs[f"{name_1}-{name_2}"] = float(
            np.max(np.abs(map_1.astype(np.float64) - map_2.astype(np.float64)), initial=0.0)
        )
    worst = max(diffs.items(), key=lambda item: item[1], default=None)
    if worst is not None and not worst[1] <= tolerance:
        raise BenchError(
            f"maps {worst[0]} disagree: max |diff| {worst[1]:.3g} > {tolerance:g} "
            f"(all pairs: {format_diffs(diffs)})"
        )
    return diffs


def dense_agreement(
    exact: npt.NDArray[np.float32], dense: npt.NDArray[np.float32], ways: Mapping[str, Any]
) -> dict[str, Any]:
    """How the dense map (d) agrees with the exact one (b): cells, lesion candidates.

    Cells compared are the tissue cells (non-zero in either map); candidates are the
    ``<slide>.csv`` files beside the maps, matched within two cells.
    """
    from wsi_tumor.evaluation.agreement import MATCH_RADIUS_CELLS, map_agreement, matched_detections
    from wsi_tumor.evaluation.nms import read_detections

    stats = map_agreement(exact, dense).to_json()
    csvs = [Path(ways[key].map_path).with_suffix(".csv") for key in ("b", "d")]
    if all(path.is_file() for path in csvs):
        both, only_exact, only_dense = matched_detections(
            read_detections(csvs[0]),
            read_detections(csvs[1]),
            MATCH_RADIUS_CELLS * contract.PATCH_STRIDE,
        )
        stats["candidates"] = {"both": both, "only_exact": only_exact, "only_dense": only_dense}
    return stats


def format_diffs(diffs: Mapping[str, float]) -> str:
    """``a-b 1.2e-06, ...``."""
    return ", ".join(f"{pair} {value:.2g}" for pair, value in diffs.items())


def best_perf(
    perf: Sequence[Mapping[str, Any]], model: str, batch: float, precision: str = "fp32"
) -> Mapping[str, Any]:
    """The highest-throughput perf row of ``model`` (``precision``) at ``batch`` patches per
    request.

    Raises:
        BenchError: when there is none.
    """
    rows = [
        r
        for r in perf
        if r["model"] == model
        and r["patches_per_request"] == batch
        and r.get("precision", "fp32") == precision
    ]
    if not rows:
        raise BenchError(f"no perf_analyzer result for {model} at {batch} patches/request")
    return max(rows, key=lambda r: float(r["patches_per_s"]))


def evaluate_targets(results: Mapping[str, Any]) -> list[Target]:
    """The targets from a results dict (see :func:`render_markdown`); INT8 ones last."""
    from wsi_bench.int8_report import int8_targets

    ways = {way["key"]: way for way in results["ways"]}
    perf = [r for r in results["perf"] if r.get("precision", "fp32") == "fp32"]
    classifier, detector = results["models"]["classifier"], results["models"]["detector"]
    targets = []
    if "a" in ways and "b" in ways:
        a, b = ways["a"], ways["b"]
        targets.append(
            Target(
                "b/a: client through the ensemble vs the MONAI PyTorch baseline (patches/s)",
                b["patches_per_s"] / a["patches_per_s"],
                1.0,
                f"{b['patches_per_s']:.1f} vs {a['patches_per_s']:.1f} patches/s",
            )
        )
    exact_perf = [r for r in perf if r["model"] in (classifier, detector)]
    for batch in sorted({r["patches_per_request"] for r in exact_perf}):
        best_d, best_c = best_perf(perf, detector, batch), best_perf(perf, classifier, batch)
        targets.append(
            Target(
                f"ensemble / classifier perf_analyzer throughput at {batch:g} patches/request",
                best_d["patches_per_s"] / best_c["patches_per_s"],
                0.9,
                f"best over concurrency: {best_d['patches_per_s']:.1f} (c={best_d['concurrency']})"
                f" vs {best_c['patches_per_s']:.1f} (c={best_c['concurrency']}) patches/s",
            )
        )
    if "d" in ways:
        d = ways["d"]
        for key, goal, versus in (("a", 10.0, "the MONAI baseline"), ("b", 4.0, "exact mode")):
            if key in ways:
                targets.append(
                    Target(
                        f"d/{key}: dense mode vs {versus} (cells/s)",
                        d["patches_per_s"] / ways[key]["patches_per_s"],
                        goal,
                        f"{d['patches_per_s']:.1f} vs {ways[key]['patches_per_s']:.1f} cells/s",
                    )
                )
    if "b" in ways and exact_perf:  # --skip-perf: no classifier throughput to compare with
        batch = results["client_batch"]
        best_c = best_perf(perf, classifier, batch)
        b = ways["b"]
        targets.append(
            Target(
                f"client end-to-end / best classifier perf_analyzer at {batch:g} patches/request",
                b["patches_per_s"] / best_c["patches_per_s"],
                0.9,
                f"{b['patches_per_s']:.1f} vs {best_c['patches_per_s']:.1f} patches/s "
                f"(c={best_c['concurrency']}); the client averaged "
                f"{b['patches'] / max(1, b['requests'] or 1):.0f} patches/request",
            )
        )
    return targets + int8_targets(results)


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _bytes(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f} MiB"


def render_markdown(results: Mapping[str, Any], targets: Sequence[Target], chart: str) -> str:
    """The report: machine, command, targets, perf table, the three ways, profile, notes."""
    machine = results["machine"]
    versions = machine["versions"]
    lines = [
        "# wsi-tumor benchmark",
        "",
        f"Generated {results['date']} by `{results['command']}` in {results['duration_s']:.0f} s.",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu_model']}, {machine['logical_cores']} logical cores "
        f"({machine['physical_cores']} physical), {machine['memory_gib']} GiB memory, no GPU used",
        f"- {machine['os']}, Python {machine['python']}; load average at start "
        f"{', '.join(str(v) for v in machine['load_average'])}",
        "- " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        "",
        "## Setup",
        "",
    ]
    lines += [f"- {item}" for item in results["setup"]]
    lines += [
        "",
        "## Targets",
        "",
        "| target | measured | goal | result | numbers |",
        "|---|---|---|---|---|",
    ]
    for t in targets:
        lines.append(
            f"| {t.name} | {t.measured:.2f} | >= {t.threshold:g} | **{t.verdict}** | {t.detail} |"
        )
    lines += [
        "",
        "## perf_analyzer (gRPC, one server, same patches per request for both models)",
        "",
        "| model | patches/request | concurrency | requests/s | patches/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["perf"]:
        model = r["model"] + (" (int8)" if r.get("precision", "fp32") != "fp32" else "")
        lines.append(
            f"| {model} | {r['patches_per_request']:g} | {r['concurrency']} | "
            f"{r['inferences_per_s'] / (r['batch_size'] or 1):.2f} | {r['patches_per_s']:.1f} | "
            f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} |"
        )
    ways = results["ways"]
    lines += [
        "",
        f"## One slide, {len(ways)} ways ({results['slide']['description']})",
        "",
        "| way | patches | patch phase s | patches/s | process s | client CPU s | "
        "client peak RSS MiB | server peak RSS MiB | server CPU s | bytes sent | bytes/patch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in ways:
        per_patch = "-" if w["bytes_sent"] is None else f"{w['bytes_sent'] / w['patches']:,.0f}"
        server_cpu = "-" if w["server_cpu_s"] is None else f"{w['server_cpu_s']:.1f}"
        lines.append(
            f"| ({w['key']}) | {w['patches']} | {w['infer_s']:.1f} | {w['patches_per_s']:.1f} | "
            f"{w['process_s']:.1f} | {w['client_cpu_s']:.1f} | {_mib(w['client_peak_rss_mib'])} | "
            f"{_mib(w['server_peak_rss_mib'])} | {server_cpu} | {_bytes(w['bytes_sent'])} | "
            f"{per_patch} |"
        )
    lines.append("")
    lines += [f"- ({w['key']}) {w['label']}" for w in ways]
    lines += ["", "Ratios (patches/s of the patch phase; process wall time in brackets):", ""]
    by_key = {w["key"]: w for w in ways}
    pairs = (("b", "a"), ("b", "c"), ("d", "a"), ("d", "b"), ("e", "b"), ("f", "d"), ("f", "a"))
    for num, den in pairs:
        if num in by_key and den in by_key:
            n, d = by_key[num], by_key[den]
            lines.append(
                f"- {num}/{den} = {n['patches_per_s'] / d['patches_per_s']:.2f} "
                f"({d['process_s'] / n['process_s']:.2f} by process wall time)"
            )
    if "b" in by_key and "c" in by_key and by_key["b"]["bytes_sent"]:
        b, c = by_key["b"], by_key["c"]
        lines.append(
            f"- bytes on the wire c/b = {c['bytes_sent'] / b['bytes_sent']:.1f}x; client CPU "
            f"c/b = {c['client_cpu_s'] / b['client_cpu_s']:.2f}x"
        )
    lines += [
        "",
        f"Exact maps (a, b, c) agree: max |diff| {format_diffs(results['agreement'])} "
        f"(tolerance {AGREEMENT_TOLERANCE:g}).",
        "",
    ]
    dense = results.get("dense_agreement")
    if dense:
        random_init = results["weights"] == SEEDED_WEIGHTS
        pearson = "n/a" if dense["pearson"] is None else f"{dense['pearson']:.4f}"
        lines.append(
            f"Dense map (d) vs exact (b) over {dense['cells']} tissue cells: max |diff| "
            f"{dense['max_abs_diff']:.3f}, mean |diff| {dense['mean_abs_diff']:.4f}, Pearson "
            f"{pearson}, same side of 0.5 in {100 * dense['decision_agreement']:.1f} % of cells"
            + (
                f"; lesion candidates: {dense['candidates']['both']} found by both, "
                f"{dense['candidates']['only_exact']} only exact, "
                f"{dense['candidates']['only_dense']} only dense"
                if "candidates" in dense
                else ""
            )
            + f". These maps come from {results['weights']}; "
            + ("these figures say little with them; " if random_init else "")
            + "the accuracy benchmark (`make accuracy`) compares the modes on the product's "
            "trained model."
        )
    from wsi_bench.int8_report import render_int8

    lines += ["", *render_int8(results)]
    lines += [
        "",
        f"![throughput]({chart})",
        "",
        "## Where the time goes",
        "",
    ]
    for w in ways:
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in w["stages_s"].items())
        lines.append(f"- ({w['key']}) client: {stages}")
    lines += [
        "",
        "Triton statistics over each run (totals; compute = input + infer + output):",
        "",
        "| way | model | requests | executions | queue ms | compute ms | compute ms/execution |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in ways:
        for model, s in w["server_stats"].items():
            compute = s["compute_input_ms"] + s["compute_infer_ms"] + s["compute_output_ms"]
            lines.append(
                f"| ({w['key']}) | {model} | {s['requests']:.0f} | {s['executions']:.0f} | "
                f"{s['queue_ms']:.0f} | {compute:.0f} | {compute / max(1.0, s['executions']):.0f} |"
            )
    if results.get("notes"):
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


def render_chart(results: Mapping[str, Any], path: Path) -> Path:
    """Bar charts: perf_analyzer patches/s per point (FP32, and INT8 where measured), and
    the ways' patches/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), width_ratios=[2, 1])
    perf = results["perf"]
    points = sorted({(r["patches_per_request"], r["concurrency"]) for r in perf})
    models = results["models"]
    series = [
        (model, precision, colour)
        for precision, colours in (
            ("fp32", ("#4c72b0", "#dd8452")),
            ("int8", ("#8172b3", "#c44e52")),
        )
        for model, colour in zip((models["classifier"], models["detector"]), colours, strict=True)
        if any(r["model"] == model and r.get("precision", "fp32") == precision for r in perf)
    ]
    width = 0.8 / max(1, len(series))
    for offset, (model, precision, colour) in enumerate(series):
        values = [
            next(
                (
                    r["patches_per_s"]
                    for r in perf
                    if r["model"] == model
                    and r.get("precision", "fp32") == precision
                    and (r["patches_per_request"], r["concurrency"]) == p
                ),
                0.0,
            )
            for p in points
        ]
        xs = [i + (offset - (len(series) - 1) / 2) * width for i in range(len(points))]
        label = model if precision == "fp32" else f"{model} (int8)"
        left.bar(xs, values, width, label=label, color=colour)
    left.set_xticks(range(len(points)), [f"{p:g} p/req\nc={c}" for p, c in points])
    left.set_ylabel("patches/s")
    left.set_title("perf_analyzer")
    left.legend(loc="lower right")
    ways = results["ways"]
    right.bar(
        [f"({w['key']})" for w in ways],
        [w["patches_per_s"] for w in ways],
        color=["#8c8c8c", "#dd8452", "#4c72b0", "#55a868", "#c44e52", "#8172b3"][: len(ways)],
    )
    right.set_title(f"one slide, {len(ways)} ways")
    right.set_ylabel("patches/s")
    fig.suptitle(f"wsi-tumor on {results['machine']['cpu_model']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
