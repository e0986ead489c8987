"""The GPU probe (benchmarks/gpu_probe.py over wsi_bench.gpu_probe, issue 17): its tiny CPU
mode, so the script that runs on a lent GPU cannot rot between loans, and the pieces its
verdicts rest on (the JPEG slide writer it shares with the serve check included)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from wsi_bench import budget, jpeg_slide
from wsi_bench.gpu_probe import ProbeError, decode, network, plan, runner
from wsi_bench.gpu_probe import reference as checks
from wsi_bench.gpu_probe import report as probe_report
from wsi_tumor.models.resnet_fcn import build_model
from wsi_tumor.slide import open_slide
from wsi_tumor.slide.jpeg import jpeg_segments

ROOT = Path(__file__).resolve().parents[1]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_probe", ROOT / "benchmarks" / "gpu_probe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _check(report: dict, name: str) -> dict:
    matches = [c for c in report["checks"] if c["name"] == name]
    assert len(matches) == 1, [c["name"] for c in report["checks"]]
    return matches[0]


# --- the tiny CPU mode, end to end -------------------------------------------------------------
@pytest.mark.slow
def test_cpu_tiny_mode_checks_the_device_path_against_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OUT", raising=False)
    out = tmp_path / "report"
    started = time.monotonic()
    status = runner.main(["--cpu-tiny", "--out", str(out), "--budget-s", "20"])
    elapsed = time.monotonic() - started
    assert status == 0, capsys.readouterr().out[-3000:]
    report = json.loads((out / "gpu_probe.json").read_text())
    grids = np.load(out / "gpu_probe_grids.npz")
    assert report["passed"] is True
    assert report["config"]["plan"] == "tiny" and report["config"]["device"] == "cpu"
    for stage in ("slide", "decode_cpu", "decode_device", "reference", "check", "network"):
        assert report["stages"][stage]["status"] == "ok", (stage, report["stages"][stage])
    # the budget holds (the check stage may overrun its slice, never the grace period)
    assert report["elapsed_s"] < 20 + budget.GRACE_S
    assert elapsed < 20 + budget.GRACE_S + 10

    # the device path (normalise on the tensor, unfold cut, dense_logits) equals the CPU
    # reference (contract.normalise, the product's tiler, the network's own stride-1 forward)
    k = plan.TINY.check_cells
    n = plan.TINY.check_regions
    assert grids["regions"].shape == (n, 224 + (k - 1) * 64, 224 + (k - 1) * 64, 3)
    for mode in ("dense", "exact"):
        reference = grids[f"reference_{mode}"]
        assert reference.shape == (n, k, k)
        # the grids vary enough that a permuted grid fails the check on this very data
        permuted = reference.reshape(-1)[::-1].reshape(reference.shape)
        assert checks.compare_logits(permuted, reference, 1e-4)["passed"] is False
        for variant in plan.TINY.variants:
            device = grids[f"device_{mode}_{variant}"]
            np.testing.assert_allclose(_sigmoid(device), _sigmoid(reference), atol=1e-4)
            check = _check(report, f"{mode} {variant} on cpu vs CPU reference")
            assert check["passed"] is True and check["tolerance"] == 1e-4
            recomputed = float(np.abs(_sigmoid(device) - _sigmoid(reference)).max())
            assert check["max_abs_prob"] == pytest.approx(recomputed, abs=1e-12)

    # the reported dense/exact agreement is what the grids give
    dense, exact = grids["reference_dense"], grids["reference_exact"]
    reported = report["agreement"]["reference (CPU fp32)"]
    p_dense, p_exact = _sigmoid(dense), _sigmoid(exact)
    assert reported["cells"] == dense.size
    assert reported["max_abs_prob"] == pytest.approx(np.abs(p_dense - p_exact).max(), rel=1e-9)
    assert reported["mean_abs_prob"] == pytest.approx(np.abs(p_dense - p_exact).mean(), rel=1e-9)
    assert reported["pearson_prob"] == pytest.approx(
        np.corrcoef(p_dense.ravel(), p_exact.ravel())[0, 1], abs=1e-9
    )
    assert reported["pearson_logit"] == pytest.approx(
        np.corrcoef(dense.ravel().astype(np.float64), exact.ravel())[0, 1], abs=1e-9
    )
    # dense and exact differ by design (zero padding at patch borders), but not by everything
    assert 0.0 < reported["mean_abs_prob"] < 0.9

    # every timed row was checked; the projection is the arithmetic of the best rows
    assert report["network"], report["stages"]["network"]
    for row in report["network"]:
        assert row["passed"] is True and row["cells_per_s"] > 0
    assert len(report["projection"]["rows"]) == 2  # dense and exact, CPU decode
    decoded = _check(report, "decode: device vs CPU pixels")  # the CPU again, here: the same
    assert decoded["passed"] is True and decoded["value"] == 0.0
    for row in report["projection"]["rows"]:
        assert row["overlapped_s"] == pytest.approx(max(row["decode_s"], row["network_s"]))
        rate = report["projection"]["network_best"][row["mode"]]["cells_per_s"]
        assert row["network_s"] == pytest.approx(1_000_000 / rate)
    markdown = (out / "gpu_probe.md").read_text()
    assert "Projected end to end" in markdown and "checks: **PASS**" in markdown
    assert "GPU probe report" in capsys.readouterr().out


# --- the pieces -----------------------------------------------------------------------------
def test_compare_logits_fails_wrong_grids_and_passes_rounding() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0.0, 2.0, (2, 8, 8)).astype(np.float32)
    noisy = reference + rng.normal(0.0, 1e-3, reference.shape).astype(np.float32)
    assert checks.compare_logits(noisy, reference, 1e-2)["passed"] is True
    assert checks.compare_logits(noisy, reference, 1e-6)["passed"] is False
    wrong = {
        "transposed": reference.transpose(0, 2, 1),
        "shifted a cell": np.roll(reference, 1, axis=2),
        "other region": reference[::-1],
        "constant": np.full_like(reference, reference.mean()),
    }
    for name, grid in wrong.items():
        assert checks.compare_logits(grid, reference, 3e-2)["passed"] is False, name
    with_nan = reference.copy()
    with_nan[0, 0, 0] = np.nan
    assert checks.compare_logits(with_nan, reference, 1.0)["passed"] is False
    assert checks.compare_logits(reference[:, :4], reference, 1.0)["passed"] is False


def test_dense_equals_exact_for_a_single_cell_region() -> None:
    """k = 1: the dense pool covers exactly the one patch, so both paths must agree."""
    torch.manual_seed(0)
    model = build_model().eval()
    regions = torch.from_numpy(jpeg_slide.synthetic_he(256, 3)[None, :224, :224].copy())
    with torch.no_grad():
        for name in ("fp32", "fp32-cl"):
            variant = network.parse_variant(name)
            dense = network.dense_forward(model, variant)(regions)
            exact = network.exact_forward(model, variant, 1)(regions)
            assert dense.shape == exact.shape == (1, 1, 1)
            np.testing.assert_allclose(dense.numpy(), exact.numpy(), rtol=1e-5, atol=1e-5)


def test_exact_cut_follows_the_tilers_row_major_order() -> None:
    """The unfold cut puts cell (row, col) at the tiler's index: checked on a toy network."""

    class MeanOfTopLeft(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            top_left = x[:, :2, 0, 0]
            return (top_left[:, 0] * 100 + top_left[:, 1]).reshape(-1, 1, 1, 1)

    k = 3
    side = 224 + (k - 1) * 64
    regions = np.zeros((2, side, side, 3), dtype=np.uint8)
    for n in range(2):
        for row in range(k):
            for col in range(k):
                regions[n, row * 64, col * 64] = (10 * n + row, col, 0)
    variant = network.parse_variant("fp32-cl")
    with torch.no_grad():
        got = network.exact_forward(MeanOfTopLeft(), variant, k)(torch.from_numpy(regions))
    # normalised values: v -> v / 255 * 2 - 1
    rows = (np.arange(2)[:, None, None] * 10 + np.arange(k)[None, :, None]) / 255 * 2 - 1
    cols = np.arange(k)[None, None, :] / 255 * 2 - 1
    np.testing.assert_allclose(got.numpy(), rows * 100 + cols, atol=1e-4)


def test_parse_variant() -> None:
    v = network.parse_variant("fp16-cl")
    assert (v.dtype, v.channels_last, v.compile_mode) == (torch.float16, True, None)
    compiled = network.parse_variant("bf16-cl+compile:reduce-overhead")
    assert (compiled.dtype, compiled.compile_mode) == (torch.bfloat16, "reduce-overhead")
    assert network.parse_variant("fp16+compile").compile_mode == "default"
    assert network.parse_variant("fp32").tolerance == 1e-4
    for bad in ("fp8", "fp16-nhwc", "fp16+fast", "fp16+graph"):
        with pytest.raises(ProbeError):
            network.parse_variant(bad)


def test_projection_arithmetic() -> None:
    result = probe_report.project(
        {"cpu": 400.0, "device": 4096.0}, {"dense": 1e5, "exact": 1e4}, 16
    )
    assert result["tissue_gpx_read_once"] == pytest.approx(4.096)
    rows = {(r["mode"], r["decoder"]): r for r in result["rows"]}
    dense_gpu = rows[("dense", "device")]
    assert dense_gpu["decode_s"] == pytest.approx(1.0)
    assert dense_gpu["network_s"] == pytest.approx(10.0)
    assert dense_gpu["overlapped_s"] == pytest.approx(10.0)
    assert dense_gpu["serial_s"] == pytest.approx(11.0)
    assert dense_gpu["meets_goal"] is True
    assert dense_gpu["vs_monai"] == pytest.approx(54.0)
    exact_cpu = rows[("exact", "cpu")]
    assert exact_cpu["decode_s"] == pytest.approx(10.24)
    assert exact_cpu["overlapped_s"] == pytest.approx(100.0)
    assert exact_cpu["meets_goal"] is False
    assert result["best"] == dense_gpu
    # a k = 16 region is 1184 px for 16 x 16 cells of 64 px; MONAI reads 224 px per cell
    assert result["dense_region_read_factor"] == pytest.approx(1184**2 / (256 * 4096))
    assert result["decode_s_monai_reads"]["device"] == pytest.approx(12.25)


def test_written_slide_is_a_standard_jpeg_tiff_with_shared_tables(tmp_path: Path) -> None:
    """The writer the probe and the serve check share: abbreviated tiles and one JPEGTables
    tag, a reduced page; read back by the product's torchvision reader and by tifffile."""
    image = jpeg_slide.synthetic_he(512, 1)
    level0 = jpeg_slide.jpeg_page(image, 256)
    small = jpeg_slide.jpeg_page(image[::4, ::4].copy(), 256, reduced=True)
    path = tmp_path / "slide.tif"
    jpeg_slide.write_jpeg_tiff(path, [level0, small])
    assert level0.tables is not None and len(level0.tiles) == 4
    for raw in level0.tiles:  # abbreviated streams: no DQT/DHT of their own
        assert not {m for m, _ in jpeg_segments(raw)} & {0xDB, 0xC4}
    with open_slide(path, "torchvision") as slide:
        assert slide.level_dimensions == ((512, 512), (128, 128))
        assert slide.mpp == pytest.approx((0.243, 0.243))
        decoded = slide.read_region((0, 0), (512, 512))
        assert slide.read_region((0, 0), (128, 128), 1).shape == (128, 128, 3)
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 3.0  # JPEG quality 90
    # an independent reader (tifffile + imagecodecs, which merges JPEGTables itself) agrees
    pytest.importorskip("imagecodecs")
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(path), decoded)


def test_bad_checkpoint_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "model.pt"
    bad.write_text("not a checkpoint")
    assert runner.main(["--cpu-tiny", "--checkpoint", str(bad), "--out", str(tmp_path)]) == 2
    assert "model.pt: cannot read as a torch checkpoint" in capsys.readouterr().err


# --- the script and what it may import ---------------------------------------------------------
def _python(*args: str) -> subprocess.CompletedProcess[str]:
    # the benchmarks' package is not installed: a child finds it through PYTHONPATH, as CI's does
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHONPATH"] = str(ROOT / "benchmarks")
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_script_is_a_thin_entry_point_over_the_package() -> None:
    assert _load_script().main is runner.main


def test_script_runs_from_the_repository_root_without_an_install() -> None:
    """``python -S`` leaves out site-packages (the editable install too), so only the script's
    own sys.path entry finds the package; ``--help`` needs nothing outside the standard library."""
    done = _python("-S", "benchmarks/gpu_probe.py", "--help")
    assert done.returncode == 0, done.stderr
    assert "--budget-s" in done.stdout and "--cpu-tiny" in done.stdout


@pytest.mark.slow  # a fresh interpreter imports torch
def test_the_package_imports_only_what_the_gpu_image_has() -> None:
    """The lent image has torch, torchvision, numpy and tifffile and nothing else of ours, and
    ``import wsi_bench.gpu_probe`` (and its CLI module) must not pull in torch."""
    code = (
        "import sys\nsys.path.insert(0, 'benchmarks')\n"
        "import wsi_bench.gpu_probe.runner\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
        "import wsi_bench.gpu_probe.decode, wsi_bench.gpu_probe.sweep\n"
        "banned = ('tritonclient', 'cucim', 'onnxruntime', 'onnx', 'skimage', 'scipy',\n"
        "          'openslide', 'tiffslide', 'matplotlib', 'yaml', 'grpc')\n"
        "print(sorted(m for m in banned if m in sys.modules))\n"
    )
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "[]"]


@pytest.mark.slow
def test_a_stage_past_the_budget_is_cut_by_the_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hard bound behind "finishes within 8 minutes": the watchdog cuts a stuck stage at
    budget + GRACE_S and writes the report (the script then exits at once; in-process callers
    get the report when the stage returns)."""

    def stuck(*_args: object, **_kwargs: object) -> dict:
        time.sleep(3)
        return {}

    monkeypatch.delenv("OUT", raising=False)
    monkeypatch.setattr(decode, "write_jpeg_tiff", stuck)
    monkeypatch.setattr(budget, "GRACE_S", 0.5)
    status = runner.main(["--cpu-tiny", "--out", str(tmp_path), "--budget-s", "1"])
    assert status == 1
    report = json.loads((tmp_path / "gpu_probe.json").read_text())
    slide = report["stages"]["slide"]
    assert slide["status"] == "abandoned"
    assert 1.5 <= slide["at_s"] < 2.5
    assert report["abandoned"] is True and report["passed"] is False


@pytest.mark.slow
def test_compiled_variant_matches_eager_on_the_cpu() -> None:
    """The compile stage's wrapper (dynamo with the eager backend here, inductor on a GPU)."""
    torch.manual_seed(0)
    nets = network.Networks(build_model().eval(), torch.device("cpu"))
    regions = torch.from_numpy(jpeg_slide.synthetic_he(512, 4)[None, :288, :288].copy())
    with torch.no_grad():
        eager = nets.forward(network.parse_variant("fp32-cl"), "dense", 2)(regions)
        compiled = nets.forward(network.parse_variant("fp32-cl+compile"), "dense", 2)
        np.testing.assert_allclose(compiled(regions).numpy(), eager.numpy(), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_quick_mode_on_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch at tiny sizes: nvJPEG decode checked against the CPU's pixels."""
    monkeypatch.delenv("OUT", raising=False)
    status = runner.main(
        ["--quick", "--device", "cuda", "--out", str(tmp_path), "--budget-s", "60"]
    )
    found = json.loads((tmp_path / "gpu_probe.json").read_text())
    assert status == 0, [c for c in found["checks"] if not c["passed"]]
    assert found["decode"]["device"]["type"] == "cuda"
