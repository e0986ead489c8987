"""The GPU serve check (benchmarks/gpu_serve.py, issue 30): every stage in its tiny CPU mode
through the real server, so the command a GPU machine runs cannot rot between loans, and the
pieces its figures rest on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from wsi_bench.gpu_serve import environment, runs, serve, stages
from wsi_bench.gpu_serve.cli import main
from wsi_bench.gpu_serve.report import render
from wsi_bench.gpu_serve.slide import CELLS_PER_TILE, write_serve_slide
from wsi_tumor import contract
from wsi_tumor.slide import open_slide, tissue_mask

ROOT = Path(__file__).resolve().parents[1]


def test_serve_slide_is_real_jpeg_with_a_consistent_mask_level(tmp_path: Path) -> None:
    path = tmp_path / "slide.tif"
    facts = write_serve_slide(path, 8, seed=1)
    assert facts["side_px"] == 2048 and facts["tiles"] == 64
    with open_slide(path, "torchvision") as slide:
        assert slide.level_dimensions == ((2048, 2048), (32, 32))
        assert slide.level_downsamples == (1.0, 64.0)
        mask = tissue_mask(slide, contract.MASK_LEVEL)
        level0 = slide.read_region((0, 0), (2048, 2048))
        small = slide.read_region((0, 0), (32, 32), 1)
    assert mask.shape == (32, 32)
    # the client's tissue mask finds the ellipse of tissue tiles (4 x 4 cells each)
    centre = (8 - 1) / 2
    rows, cols = np.mgrid[:8, :8]
    inside = (rows - centre) ** 2 + (cols - centre) ** 2 < (0.48 * 8) ** 2
    nominal = np.kron(inside, np.ones((4, 4), bool))
    assert nominal.sum() == facts["nominal_tissue_cells"] == facts["tissue_tiles"] * CELLS_PER_TILE
    assert (mask & nominal).sum() / (mask | nominal).sum() > 0.9
    # the mask level is level 0's 64 x 64 block mean, within JPEG's loss (4:2:0 chroma on
    # 4 x 4 px blocks of different tiles: measured 6.7 levels)
    means = level0.reshape(32, 64, 32, 64, 3).mean(axis=(1, 3))
    assert np.abs(means - small).mean() < 10.0
    assert 1.0 < facts["bits_per_pixel"] < 4.0  # real JPEG tiles, CAMELYON-like


def test_server_statistics_deltas_and_the_breakdown_arithmetic() -> None:
    def stats(count: int, ns: int, inferences: int) -> dict:
        timing = {"count": count, "ns": ns}
        keys = ("success", "queue", "compute_input", "compute_infer", "compute_output")
        return {"inference_stats": {k: timing for k in keys}, "execution_count": count,
                "inference_count": inferences}  # fmt: skip

    before = {contract.DENSE_MODEL: stats(2, 1_000_000_000, 8), "idle": stats(1, 5, 1)}
    after = {contract.DENSE_MODEL: stats(12, 3_000_000_000, 48), "idle": stats(1, 5, 1)}
    delta = serve.stats_delta(before, after)
    assert list(delta) == [contract.DENSE_MODEL]  # models that did nothing are left out
    row = delta[contract.DENSE_MODEL]
    assert (row["requests"], row["executions"], row["inferences"]) == (10, 10, 40)
    assert row["compute_infer_s"] == pytest.approx(2.0)
    report = {"timings_s": {"stream": 4.0, "total": 5.0, "server": 8.0, "mask": 0.5,
                            "outputs": 0.5, "read": 3.0, "serialise": 1.0},
              "counts": {"patches": 40_000, "requests": 10, "tissue_cells": 40_000}}  # fmt: skip
    run = {"mode": "dense", "wall_s": 7.0, "peak_rss_mib": 900.0, "report": report}
    found = runs.breakdown(run, delta, {})
    assert found["cells_per_s_stream"] == pytest.approx(10_000)
    assert found["cells_per_s_slide"] == pytest.approx(8_000)
    latency = found["request_latency_ms"]
    assert latency["client"] == pytest.approx(800) and latency["server"] == pytest.approx(200)
    assert found["gpu_busy_share_from_compute"] == pytest.approx(2.0 / 4.0)
    # 1M cells at 10,000/s, plus the fixed 3 s (7 - 4) less this slide's mask and outputs
    # (1 s), plus a 1M-cell slide's (25 s)
    assert found["projected_1m_s"] == pytest.approx(100 + 2 + 25)


def test_progress_log_gives_a_cut_runs_cells_and_rate(tmp_path: Path) -> None:
    path = tmp_path / "run.progress"
    assert runs.read_progress(path) is None  # killed before its first answer
    path.write_text("1.500 100\n")
    assert runs.read_progress(path) == {"cells": 100, "answers": 1, "first_answer_s": 1.5,
                                        "last_answer_s": 1.5, "cells_per_s": None}  # fmt: skip
    path.write_text("1.500 100\n2.500 300\n5.500 900\n6.125 9")  # the last line unfinished
    found = runs.read_progress(path)
    assert found is not None and (found["cells"], found["answers"]) == (900, 3)
    assert found["cells_per_s"] == pytest.approx(800 / 4.0)  # cells after the first answer


def test_a_cut_run_is_a_missed_target_with_its_partial_rate() -> None:
    cut = {"exit": -15, "cut": True, "partial_cells": 12_990, "partial_s": 66.2,
           "partial_cells_per_s": 250.0, "drain": {"idle": False, "waited_s": 9.4},
           "client": {"peak_rss_mib": 1128.0}}  # fmt: skip
    note = stages._note(cut)
    assert note.startswith("partial: cut after 66 s with 12,990 cells answered, 250 cells/s")
    assert note.endswith("; server not idle 9 s later")
    row = next(line for line in render({"runs": {"dense": cut}}).splitlines()
               if line.startswith("| dense |"))  # fmt: skip
    assert "| 12990 (cut) | 250 (cut) | - | 50,000 | no (cut) | 4,000 (stream only) |" in row
    with pytest.raises(RuntimeError, match="before its first answer"):
        stages._note({**cut, "partial_cells": 0, "partial_cells_per_s": None})
    with pytest.raises(RuntimeError, match="wsi-infer exited 1"):  # ended without its slide
        stages._note({"exit": 1, "cut": False, "log_tail": ["no tissue"]})


def test_agreement_fails_a_moved_map() -> None:
    rng = np.random.default_rng(0)
    reference = np.where(rng.random((12, 16)) < 0.6, rng.random((12, 16)), 0).astype(np.float32)
    close = np.where(reference > 0, reference + 1e-5, 0).astype(np.float32)
    assert runs.agreement(close, reference, 1e-4)["passed"] is True
    assert runs.agreement(np.roll(reference, 1, axis=1), reference, 1e-2)["passed"] is False
    assert runs.agreement(reference[:, :8], reference, 1.0)["passed"] is False


def test_missing_prerequisites_are_one_line_errors(tmp_path: Path) -> None:
    assert environment.glibc() >= (2, 35)
    with pytest.raises(environment.PrerequisiteError, match="run make gpu-bundle"):
        environment.bundle_setup(tmp_path / "no-bundle", tmp_path / "work", cuda=False)
    try:
        found = environment.find_libpython()
    except environment.PrerequisiteError as exc:
        assert "not found" in str(exc) or "the same release" in str(exc)
    else:
        assert found.name == f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"


@pytest.mark.slow
@pytest.mark.triton
def test_tiny_cpu_mode_runs_every_stage_through_the_real_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OUT", raising=False)
    out = tmp_path / "report"
    argv = ["--device", "cpu", "--tiny", "--out", str(out), "--work", str(tmp_path / "work"),
            "--readers", "2", "--budget-s", "400"]  # fmt: skip
    status = main(argv)
    report = json.loads((out / "gpu_serve.json").read_text())
    stages = {name: s["status"] for name, s in report["stages"].items()}
    assert status == 0, (stages, capsys.readouterr().err[-3000:])
    assert report["passed"] is True and report["setup"]["kind"] == "local"
    assert stages == {**dict.fromkeys(stages, "ok"), "dense_nvjpeg": "skipped"}
    cells = report["slides"]["big"]["nominal_tissue_cells"]
    for mode in ("dense", "exact"):
        run = report["runs"][mode]
        assert run["exit"] == 0 and run["cut"] is False
        assert abs(run["cells"] - cells) <= 0.2 * cells and run["cells_per_s_stream"] > 0
        # the progress log (what a cut run is measured by) counted every answered cell
        assert run["progress"]["cells"] == run["cells"]
        assert run["server_peak_rss_mib"] > 100 and run["client"]["peak_rss_mib"] > 100
        top = contract.DENSE_MODEL if mode == "dense" else contract.ENSEMBLE_MODEL
        assert run["server_models"][top]["requests"] == run["requests"]
        # every cell was classified once by the network of the mode
        if mode == "exact":
            assert run["server_models"][contract.CLASSIFIER_MODEL]["inferences"] == run["cells"]
        agreement = report["agreement"][mode]
        assert agreement["passed"] is True and agreement["max_abs_prob"] <= 1e-4
        assert agreement["same_tissue_cells"] is True and agreement["cells"] == run["cells"]
    markdown = (out / "gpu_serve.md").read_text()
    for heading in ("## End to end", "## Where the time goes", "## Maps against", "## Stages"):
        assert heading in markdown
