"""``make accuracy``'s small version: every stage on small hard slides, through the real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsi_bench.accuracy import MODES, main
from wsi_tumor.data.hard import CONFOUNDERS


@pytest.mark.triton
@pytest.mark.slow
def test_quick_accuracy_run_scores_both_modes(tmp_path: Path) -> None:
    out = tmp_path / "report"
    code = main(["--quick", "--quiet", "--out", str(out), "--workdir", str(tmp_path / "work")])
    assert code == 0

    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["preset"] == "hard"
    assert results["dataset"]["test_slides"] == 2
    assert results["dataset"]["tumour_test_slides"] == 1
    for mode in MODES:
        scores = results["modes"][mode]
        assert 0.0 <= scores["froc"] <= 1.0
        assert 0.0 <= scores["auc"] <= 1.0
        assert len(scores["sensitivity_at_fp"]) == 6
        assert set(scores["slide_scores"]) == set(results["per_slide"])
        assert scores["patches_per_s"] > 0
        for curve in ("froc", "roc"):
            assert (out / f"{curve}_{mode}.png").stat().st_size > 0
    assert [row["confounder"] for row in results["confounders"]] == list(CONFOUNDERS)
    assert results["agreement"]["pooled"]["candidates"]
    for key, (low, high) in results["difference_interval_95"].items():
        difference = results["modes"]["dense"][key] - results["modes"]["exact"][key]
        # one tumour and one normal slide: every resample draws the same two
        assert low == pytest.approx(difference) and high == pytest.approx(difference)
    assert set(results["targets"]) and all(isinstance(v, bool) for v in results["targets"].values())
    assert results["classifier_patches_per_s"] > 0
    report = (out / "report.md").read_text()
    assert "FROC" in report and "AUC" in report and "patches/s" in report
    assert "95 % interval" in report
