"""The benchmark package: agreement check, targets, report rendering, sampling, a tiny run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from wsi_bench import BenchError
from wsi_bench.report import (
    Target,
    check_agreement,
    evaluate_targets,
    render_chart,
    render_markdown,
)
from wsi_bench.resources import TreeSampler, tree_cpu_s, tree_rss_mib
from wsi_bench.ways import statistics_delta


def _maps(shift: float) -> dict[str, np.ndarray]:
    base = np.random.default_rng(0).random((16, 24)).astype(np.float32)
    changed = base.copy()
    changed[3, 5] += np.float32(shift)
    return {"a": base, "b": base.copy(), "c": changed}


def test_agreement_passes_within_tolerance_and_reports_every_pair() -> None:
    diffs = check_agreement(_maps(5e-5))
    assert list(diffs) == ["a-b", "a-c", "b-c"]
    assert diffs["a-b"] == 0.0
    np.testing.assert_allclose(diffs["a-c"], 5e-5, rtol=1e-2)


def test_agreement_fails_on_a_1e3_difference() -> None:
    with pytest.raises(BenchError, match=r"a-c disagree: max \|diff\| 0.001 > 0.0001"):
        check_agreement(_maps(1e-3))


def test_agreement_fails_on_different_shapes() -> None:
    maps = _maps(0.0)
    maps["b"] = maps["b"][:-1]
    with pytest.raises(BenchError, match="differ in shape"):
        check_agreement(maps)


def test_target_verdicts() -> None:
    assert Target("t", 1.2, 1.0, "").verdict == "PASS"
    assert Target("t", 0.9, 0.9, "").passed
    assert Target("t", 0.81, 0.9, "").verdict == "MISS by 10.0 %"


def fake_results() -> dict:
    perf = []
    for batch, c, classifier, detector in ((40, 1, 50.0, 46.0), (160, 1, 60.0, 50.0)):
        perf.append(
            {"model": "tumor_classifier", "batch_size": batch, "concurrency": c,
             "inferences_per_s": classifier, "patches_per_s": classifier, "p50_ms": 800.0,
             "p99_ms": 900.0, "patches_per_request": float(batch)}
        )  # fmt: skip
        perf.append(
            {"model": "tumor_detector", "batch_size": 1, "concurrency": c,
             "inferences_per_s": detector / batch, "patches_per_s": detector, "p50_ms": 850.0,
             "p99_ms": 990.0, "patches_per_request": float(batch)}
        )  # fmt: skip
    way = {
        "label": "x", "process_s": 10.0, "client_cpu_s": 5.0, "client_peak_rss_mib": 500.0,
        "server_peak_rss_mib": None, "server_cpu_s": None, "bytes_sent": None,
        "requests": None, "stages_s": {"read": 1.0}, "server_stats": {}, "map_path": "",
    }  # fmt: skip
    stats = {
        "tumor_classifier": {
            "requests": 4.0, "executions": 2.0, "inferences": 160.0, "queue_ms": 10.0,
            "compute_input_ms": 1.0, "compute_infer_ms": 3000.0, "compute_output_ms": 1.0,
        }
    }  # fmt: skip
    return {
        "date": "2026-11-23T10:00:00+00:00",
        "command": "make bench",
        "duration_s": 600.0,
        "machine": {
            "cpu_model": "Test CPU",
            "logical_cores": 2,
            "physical_cores": 1,
            "memory_gib": 24.0,
            "os": "Linux",
            "python": "3.11.7",
            "load_average": [0.1, 0.2, 0.3],
            "versions": {"torch": "2.14.1", "onnxruntime": "1.32", "tritonserver": "2.51.0"},
        },
        "slide": {"description": "synthetic"},
        "setup": ["model: seeded"],
        "weights": "seeded random-init weights",
        "models": {"classifier": "tumor_classifier", "detector": "tumor_detector"},
        "perf": perf,
        "client_batch": 160.0,
        "ways": [
            {**way, "key": "a", "patches": 1000, "infer_s": 50.0, "patches_per_s": 20.0},
            {
                **way,
                "key": "b",
                "patches": 1000,
                "infer_s": 20.0,
                "patches_per_s": 50.0,
                "bytes_sent": 2_000_000,
                "requests": 10,
                "server_stats": stats,
                "server_peak_rss_mib": 900.0,
                "server_cpu_s": 30.0,
            },
            {
                **way,
                "key": "c",
                "patches": 1000,
                "infer_s": 25.0,
                "patches_per_s": 40.0,
                "bytes_sent": 600_000_000,
                "requests": 10,
                "client_cpu_s": 9.0,
            },
            {
                **way,
                "key": "d",
                "patches": 1000,
                "infer_s": 4.0,
                "patches_per_s": 250.0,
                "bytes_sent": 3_000_000,
                "requests": 5,
            },
        ],
        "agreement": {"a-b": 1e-6, "a-c": 2e-6, "b-c": 1e-6},
        "dense_agreement": {
            "cells": 1000,
            "max_abs_diff": 0.2,
            "mean_abs_diff": 0.01,
            "pearson": 0.99,
            "decision_agreement": 0.995,
            "candidates": {"both": 3, "only_exact": 1, "only_dense": 0},
        },
        "notes": ["tuned nothing"],
    }


def test_targets_compare_matched_batches_and_the_client() -> None:
    targets = evaluate_targets(fake_results())
    measured = [round(t.measured, 3) for t in targets]
    # b/a, detector/classifier at 40 and 160 patches, d/a, d/b, client / classifier at 160
    assert measured == [2.5, 0.92, 0.833, 12.5, 5.0, 0.833]
    assert [t.passed for t in targets] == [True, True, False, True, True, False]
    # --skip-perf: the ways' ratios only, and the report still renders
    skipped = {**fake_results(), "perf": []}
    assert [round(t.measured, 3) for t in evaluate_targets(skipped)] == [2.5, 12.5, 5.0]
    assert "d/a" in render_markdown(skipped, evaluate_targets(skipped), "throughput.png")


def test_report_renders_machine_targets_tables_and_ratios(tmp_path: Path) -> None:
    results = fake_results()
    targets = evaluate_targets(results)
    text = render_markdown(results, targets, "throughput.png")
    assert "Test CPU, 2 logical cores" in text and "tritonserver 2.51.0" in text
    assert "`make bench`" in text and "2026-11-23" in text
    assert "**PASS**" in text and "**MISS by 7.4 %**" in text
    assert "| tumor_detector | 160 | 1 | 0.31 | 50.0 | 850 | 990 |" in text
    assert "- b/a = 2.50 (1.00 by process wall time)" in text
    assert "- b/c = 1.25" in text and "bytes on the wire c/b = 300.0x" in text
    assert "- d/a = 12.50" in text and "- d/b = 5.00" in text
    assert "Pearson 0.9900" in text and "3 found by both, 1 only exact, 0 only dense" in text
    assert "come from seeded random-init weights; these figures say little with them;" in text
    results["weights"] = "the checkpoint /w.pt"
    text_given = render_markdown(results, targets, "throughput.png")
    assert "come from the checkpoint /w.pt; the accuracy benchmark" in text_given
    assert "| (b) | tumor_classifier | 4 | 2 | 10 | 3002 | 1501 |" in text
    assert "![throughput](throughput.png)" in text and "- tuned nothing" in text
    chart = render_chart(results, tmp_path / "chart.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def int8_results() -> dict:
    """fake_results() with the INT8 half: ways (e) and (f), INT8 perf rows, the setup."""
    results = fake_results()
    way = {**results["ways"][1], "bytes_sent": 2_000_000, "requests": 10}
    results["ways"] += [
        {**way, "key": "e", "patches": 1000, "infer_s": 10.0, "patches_per_s": 100.0},
        {**way, "key": "f", "patches": 1000, "infer_s": 2.0, "patches_per_s": 500.0},
    ]
    results["perf"] += [
        {**row, "precision": "int8", "patches_per_s": 3 * row["patches_per_s"]}
        for row in results["perf"]
        if row["model"] == "tumor_classifier"
    ]
    agreement = {"cells": 1000, "max_abs_diff": 0.04, "mean_abs_diff": 0.003,
                 "pearson": 0.998, "decision_agreement": 0.999, "flipped": 1}  # fmt: skip
    results["int8"] = {
        "cpu_features": {
            "avx512_vnni": False,
            "avx_vnni": False,
            "amx_int8": False,
            "avx512bw": False,
            "avx2": True,
        },
        "dot_product": False,
        "kernels": {"tumor_classifier": {"QLinearConv": 20, "Conv": 1}},
        "fp32_kernels": {"tumor_classifier": {"FusedConv": 21}},
        "records": {"tumor_classifier": None},
        "agreement": {"b-e": agreement, "d-f": {**agreement, "pearson": 0.95, "flipped": 7}},
    }
    return results


def test_int8_targets_section_and_perf_ratios() -> None:
    results = int8_results()
    targets = evaluate_targets(results)
    # the FP32 targets ignore the INT8 perf rows; the INT8 ones follow them
    assert [round(t.measured, 3) for t in targets[:6]] == [2.5, 0.92, 0.833, 12.5, 5.0, 0.833]
    int8 = {t.name.split(":")[0]: t for t in targets[6:]}
    assert round(int8["f/a"].measured, 2) == 25.0 and int8["f/a"].passed
    assert round(int8["f/d"].measured, 2) == 2.0 and int8["f/d"].passed
    assert (
        round(int8["e/b"].measured, 2) == 2.0 and "(this CPU has no VNNI/AMX)" in int8["e/b"].detail
    )
    pearson = [t for t in targets if "Pearson" in t.name]
    assert [(t.measured, t.passed) for t in pearson] == [(0.998, True), (0.95, False)]
    text = render_markdown(results, targets, "throughput.png")
    assert "**No VNNI or AMX**" in text and "QLinearConv 20, Conv 1" in text
    assert "| tumor_classifier | 40 | 1 | 50.0 | 150.0 | 3.00 |" in text
    assert "| tumor_classifier (int8) | 160 |" in text
    assert "- e/b = 2.00" in text and "- f/d = 2.00" in text and "- f/a = 25.00" in text
    assert "map (f) INT8 vs (d) FP32 over 1000 tissue cells: Pearson 0.9500" in text
    assert "7 cells on the other side of 0.5" in text and ">= 0.99 |" in text
    assert "## One slide, 6 ways" in text


def test_statistics_delta_keeps_models_that_served() -> None:
    before = {"m": {"requests": 2.0, "executions": 1.0, "inferences": 8.0, "queue_ns": 1e6,
                    "compute_input_ns": 0.0, "compute_infer_ns": 5e6, "compute_output_ns": 0.0},
              "idle": {"requests": 1.0, "executions": 1.0, "inferences": 1.0, "queue_ns": 0.0,
                       "compute_input_ns": 0.0, "compute_infer_ns": 0.0,
                       "compute_output_ns": 0.0}}  # fmt: skip
    after = {"m": {**before["m"], "requests": 6.0, "executions": 3.0, "compute_infer_ns": 25e6},
             "idle": before["idle"]}  # fmt: skip
    delta = statistics_delta(before, after)
    assert list(delta) == ["m"]
    assert delta["m"]["requests"] == 4.0 and delta["m"]["compute_infer_ms"] == 20.0


def test_tree_sampler_sees_this_process() -> None:
    assert tree_rss_mib(os.getpid()) > 10 and tree_cpu_s(os.getpid()) > 0
    with TreeSampler(interval_s=0.01) as sampler:
        sampler.watch("me", os.getpid())
        assert sampler.peak_mib("me") > 10
        assert sampler.unwatch("me") > 10
    assert tree_rss_mib(2**22 + 12345) == 0.0


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.triton
@pytest.mark.timeout(1800)  # two servers, MONAI's pipeline and 6 ways: 6 min on 2 quiet cores
def test_tiny_end_to_end_run(tmp_path: Path) -> None:
    """Every way, FP32 (a-d) and INT8 (e, f), and perf_analyzer on both servers, on a tiny
    slide with seeded weights (no training)."""
    from wsi_bench.cli import main

    out = tmp_path / "results"
    argv = ["--out", str(out), "--size", "2048", "--weights", "seeded", "--regions", "1",
            "--dense-regions", "1", "--concurrency", "1", "--request-count", "3",
            "--calibration-patches", "32", "--calibration-regions", "4",
            "--workdir", str(tmp_path / "work")]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    ways = {w["key"]: w for w in results["ways"]}
    assert list(ways) == ["a", "b", "c", "d", "e", "f"]
    assert [ways[k]["precision"] for k in "abcdef"] == ["fp32"] * 4 + ["int8"] * 2
    assert max(results["agreement"].values()) <= 1e-4
    patches = {w["patches"] for w in ways.values()}
    assert len(patches) == 1 and patches.pop() > 0
    assert ways["c"]["bytes_sent"] > 10 * ways["b"]["bytes_sent"]
    models = {"tumor_classifier", "tumor_detector", "tumor_detector_dense"}
    for precision in ("fp32", "int8"):
        assert {r["model"] for r in results["perf"] if r["precision"] == precision} == models
    dense = results["dense_agreement"]
    assert dense["cells"] == ways["b"]["patches"] and 0 <= dense["mean_abs_diff"] < 1
    int8 = results["int8"]
    assert set(int8["agreement"]) == {"b-e", "d-f"}
    for stats in int8["agreement"].values():
        assert stats["cells"] == ways["b"]["patches"] and stats["max_abs_diff"] < 0.1
    assert int8["kernels"]["tumor_detector_dense"]["QLinearConv"] == 20
    calibration = int8["records"]["tumor_classifier"]["calibration"]
    assert calibration["slides"] and calibration["patches"] == 32
    names = [t["name"] for t in results["targets"]]
    assert any(n.startswith("f/a") for n in names) and any(n.startswith("e/b") for n in names)
    report = (out / "report.md").read_text()
    assert "## Targets" in report and "## INT8" in report and (out / "throughput.png").is_file()
