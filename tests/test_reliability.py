"""Damaged and hostile input, outputs you can trust after any stop (issue: reliability).

Damaged tiles inside the tissue, a write that fails for lack of space, outputs cut short
after a crash, and fuzzed annotation, label and detection files: each case behaves as the
README's reliability section says, and in a cohort the other slides finish.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from wsi_tumor.errors import AnnotationError, EvaluationError, LabelError, OutputError

REPO_ROOT = Path(__file__).resolve().parents[1]


# --- fuzzed annotation, label and detection files ------------------------------------------
def _variants(text: str, seed: int, count: int = 60) -> list[str]:
    """Truncations and garbled copies of ``text``."""
    rng = np.random.default_rng(seed)
    out = [text[: int(n)] for n in rng.integers(1, len(text), count // 2)]
    for _ in range(count // 2):
        chars = list(text)
        for position in rng.integers(0, len(chars), int(rng.integers(1, 6))):
            chars[position] = chr(int(rng.choice([0x3C, 0x3E, 0x22, 0x2C, 0x7B, 0x5D, 0x41, 0x0A])))
        out.append("".join(chars))
    return out


def _polygons_text(tmp_path: Path, suffix: str) -> str:
    from wsi_tumor.annotations.formats import Polygon, write_asap_xml, write_ncrf_json

    square = np.array([[100.0, 100.0], [900.5, 120.0], [880.0, 950.0], [90.0, 870.25]])
    polygons = [Polygon("Annotation 0", "_0", square), Polygon("Annotation 1", "_2", square / 3)]
    path = tmp_path / f"seed{suffix}"
    (write_asap_xml if suffix == ".xml" else write_ncrf_json)(path, polygons)
    return path.read_text()


@pytest.mark.parametrize("suffix", [".xml", ".json"])
def test_fuzzed_annotations_give_typed_errors_naming_the_file(tmp_path: Path, suffix: str) -> None:
    from wsi_tumor.annotations.formats import read_annotations

    failures = 0
    for index, text in enumerate(_variants(_polygons_text(tmp_path, suffix), seed=len(suffix))):
        path = tmp_path / f"case{index}{suffix}"
        path.write_text(text)
        try:
            read_annotations(path)
        except AnnotationError as exc:
            failures += 1
            assert str(exc).startswith(f"{path}:"), str(exc)
    assert failures >= 20, "the fuzzer must actually break most files"


def test_fuzzed_coords_labels_and_detections_give_file_line_errors(tmp_path: Path) -> None:
    from wsi_tumor.evaluation.nms import read_detections
    from wsi_tumor.training.labels import read_coords, read_label_csv

    files = {
        "coords.txt": (read_coords, LabelError, "tumor_001,1024,2048\nnormal_001,64,96\n" * 4),
        "labels.csv": (
            read_label_csv, LabelError, "tumor_001,1024,2048,0,1,0,0,1,1,0,0,0\n" * 4
        ),
        "det.csv": (read_detections, EvaluationError, "0.9,1024,2048\n0.4,96,64\n" * 4),
    }  # fmt: skip
    for name, (reader, error, text) in files.items():
        broken = 0
        for index, variant in enumerate(_variants(text, seed=len(name))):
            path = tmp_path / f"{index}-{name}"
            path.write_text(variant)
            try:
                reader(path)
            except error as exc:
                broken += 1
                assert str(exc).startswith(f"{path}:"), str(exc)
        assert broken >= 10, name


# --- a write that fails ---------------------------------------------------------------------
def test_a_full_disk_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    """ENOSPC on a real size-limited filesystem (tmpfs, where this machine lets us mount)."""
    from wsi_tumor.fileio import write_text

    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        write_text(mount / "small.txt", "fits\n")
        with pytest.raises(OutputError, match=r"big.json: cannot write: No space left"):
            write_text(mount / "big.json", "x" * 200_000)
        assert sorted(p.name for p in mount.iterdir()) == ["small.txt"]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture(scope="module")
def reliability_slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from test_client import tissue_image, write_slide

    root = tmp_path_factory.mktemp("reliability")
    good = write_slide(root / "good.tif", tissue_image(1536, 1024, seed=1))
    small = write_slide(root / "small.tif", tissue_image(512, 384, seed=3))
    damaged = root / "damaged.tif"
    data = bytearray(good.read_bytes())
    with tifffile.TiffFile(good) as tif:
        page = tif.pages[0]
        across = -(-page.imagewidth // page.tilewidth)
        index = 1 * across + 3  # tile (3, 1): inside the large ellipse, upper right
        offset = page.dataoffsets[index]
    rng = np.random.default_rng(0)
    data[offset + 30 : offset + 90] = rng.integers(0, 256, 60, dtype=np.uint8).tobytes()
    damaged.write_bytes(bytes(data))
    return {"good": good, "small": small, "damaged": damaged}


@pytest.fixture(scope="module")
def server(triton_server_factory, exported_repository):
    return triton_server_factory(exported_repository.repository)


@pytest.mark.triton
@pytest.mark.slow
def test_damaged_tiles_are_left_out_and_recorded(reliability_slides, server, tmp_path) -> None:
    from wsi_tumor import infer as cli

    cohort = tmp_path / "in"
    cohort.mkdir()
    for name in ("good", "damaged"):
        shutil.copy(reliability_slides[name], cohort / f"{name}.tif")
    out = tmp_path / "out"
    argv = [str(cohort), "--out", str(out), "--url", server.grpc_url, "--quiet"]
    assert cli.main(argv) == 0
    report = json.loads((out / "damaged.json").read_text())
    damaged = report["damaged"]
    assert damaged["regions"] >= 1 and damaged["cells"] >= 1
    assert any("level 0 tile (3, 1)" in p for d in damaged["left_out"] for p in d["problems"])
    good_map, damaged_map = np.load(out / "good.npy"), np.load(out / "damaged.npy")
    left_out = np.zeros(good_map.shape, bool)
    for region in damaged["left_out"]:
        left_out[region["row"] : region["row"] + 8, region["col"] : region["col"] + 8] = True
    assert (damaged_map[left_out] == 0).all() and (good_map[left_out] > 0).any()
    np.testing.assert_array_equal(damaged_map[~left_out], good_map[~left_out])
    assert report["counts"]["patches"] + damaged["cells"] == report["counts"]["tissue_cells"]


@pytest.mark.triton
@pytest.mark.slow
def test_outputs_cut_short_are_found_and_the_slide_recomputed(
    reliability_slides, server, tmp_path
) -> None:
    from wsi_tumor import infer as cli

    argv = [str(reliability_slides["small"]), "--out", str(tmp_path), "--url", server.grpc_url]
    assert cli.main([*argv, "--quiet"]) == 0
    first = np.load(tmp_path / "small.npy")
    report = json.loads((tmp_path / "small.json").read_text())
    assert set(report["checksums"]) == {
        "small.npy", "small_mask.png", "small_heatmap.png", "small.csv", "small.geojson"
    }  # fmt: skip
    heatmap = tmp_path / "small_heatmap.png"
    heatmap.write_bytes(heatmap.read_bytes()[:100])  # a crash or a full disk cut it short
    assert cli.main([*argv, "--quiet"]) == 0
    summary = json.loads((tmp_path / "cohort_summary.json").read_text())
    assert summary["slides"][0]["status"] == "complete", "recomputed, not skipped"
    assert heatmap.stat().st_size > 100
    np.testing.assert_array_equal(np.load(tmp_path / "small.npy"), first)
    assert cli.main([*argv, "--quiet"]) == 0
    summary = json.loads((tmp_path / "cohort_summary.json").read_text())
    assert summary["slides"][0]["status"] == "skipped"


@pytest.mark.triton
@pytest.mark.slow
def test_a_failed_write_stops_that_slide_and_the_cohort_goes_on(
    reliability_slides, server, tmp_path
) -> None:
    """Files of the big slide exceed the process's file-size limit (EFBIG, as a full disk
    would stop them); it fails with one line, leaves no report, and the small slide finishes."""
    cohort = tmp_path / "in"
    cohort.mkdir()
    shutil.copy(reliability_slides["good"], cohort / "a_big.tif")
    shutil.copy(reliability_slides["small"], cohort / "b_small.tif")
    out = tmp_path / "out"
    out.mkdir()
    limit = (
        10_000  # bytes: the big slide's heatmap (17 kB) is larger, the small one's files smaller
    )

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "client" / "infer_wsi.py"), str(cohort), "--out",
         str(out), "--url", server.grpc_url, "--quiet"],
        capture_output=True, text=True, preexec_fn=limit_file_size, timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    summary = {
        Path(s["slide"]).stem: s
        for s in json.loads((out / "cohort_summary.json").read_text())["slides"]
    }
    assert (
        summary["a_big"]["status"] == "failed" and summary["a_big"]["error_type"] == "OutputError"
    )
    assert "cannot write: File too large" in summary["a_big"]["error"]
    assert summary["b_small"]["status"] == "complete"
    assert not (out / "a_big.json").exists() and (out / "b_small.json").exists()
    assert not list(out.glob(".*.tmp"))
    assert "a_big.tif: OutputError" in done.stderr
