"""``make accuracy``'s small version: every stage on small hard slides, through the real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsi_bench.accuracy.cli import main
from wsi_bench.accuracy.recipe import RECIPE
from wsi_bench.accuracy.summary import mean_interval
from wsi_tumor.data.hard import CONFOUNDERS


def test_mean_interval_is_students_t() -> None:
    from scipy import stats

    values = [0.7, 0.8, 0.9, 0.85]
    block = mean_interval(values)
    low, high = stats.t.interval(0.95, 3, loc=sum(values) / 4, scale=stats.sem(values))
    assert block["low"] == pytest.approx(low) and block["high"] == pytest.approx(high)
    assert mean_interval([0.5])["low"] is None


@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(1800)  # every stage of the ablation: 7.6 min on a quiet 2-core runner
def test_quick_accuracy_run_has_every_stage(tmp_path: Path) -> None:
    out, work = tmp_path / "report", tmp_path / "work"
    argv = ["--quick", "--ablation", "--quiet", "--workdir", str(work)]
    assert main([*argv, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    seed = results["per_seed"]["0"]
    assert seed["dataset"]["test_slides"] == 2 and seed["dataset"]["tumour_test_slides"] == 1
    runs = seed["variants"][results["final_key"]]
    assert set(runs) == {"dense", "exact", "dense-int8"}
    for scores in runs.values():
        assert 0.0 <= scores["froc"] <= 1.0 and 0.0 <= scores["auc_map_max"] <= 1.0
        assert scores["auc_classifier"] is not None and scores["auc"] == scores["auc_classifier"]
        assert set(scores["fp_on_confounders"]) == {"all", *CONFOUNDERS}
    assert seed["mining"]["mined"] <= seed["mining"]["cap"]
    for block in ("dense_vs_exact", "int8_vs_fp32"):
        assert seed[block]["cells"] > 0 and -1.0 <= seed[block]["pearson"] <= 1.0
    # every slide of the recipe's run carries the classifier's probability and features
    reports = sorted((work / "seed_0" / RECIPE.model_key).glob("predictions_dense/test_*.json"))
    assert reports
    for report in reports:
        scored = json.loads(report.read_text())["slide_classifier"]
        assert 0.0 <= scored["probability"] <= 1.0 and "max_logit" in scored["features"]
    names = [r["name"] for r in results["stages"]]
    stages = ("mine hard negatives", "fit the slide classifier", "export both networks in INT8")
    for stage in stages:
        assert stage in names
    assert results["classifier_patches_per_s"] > 0
    report = (out / "report.md").read_text()
    assert "FROC" in report and "AUC" in report and "patches/s" in report
    # a second run over the same work dir reuses every stage
    assert main([*argv, "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert all(record["reused"] for record in again["stages"])
    assert again["per_seed"] == results["per_seed"]
