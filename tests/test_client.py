"""The WSI client against the real tritonserver and a seeded random-init exported model.

Slides are small pyramidal TIFFs written here (1536 x 1024 px: 24 x 16 mask cells), so the
whole file stays within a couple of minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from wsi_tumor import contract
from wsi_tumor import infer as cli
from wsi_tumor.client.config import InferConfig
from wsi_tumor.client.endpoints import Endpoint
from wsi_tumor.client.outputs import SlideOutputs
from wsi_tumor.client.runner import SUMMARY_NAME, run
from wsi_tumor.data.tiff_writer import PyramidSpec, write_pyramid
from wsi_tumor.errors import ModelMismatchError
from wsi_tumor.serving.local_server import LocalTritonServer

pytestmark = [pytest.mark.triton, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1536, 1024
MAX_ABS_DIFF = 1e-4


def tissue_image(width: int, height: int, seed: int = 0, blank: bool = False) -> np.ndarray:
    """Glass with an asymmetric tissue: a large ellipse upper right, a small blob lower left."""
    rng = np.random.default_rng(seed)
    image = rng.normal(236, 3, (height, width, 3))
    if not blank:
        yy, xx = np.mgrid[:height, :width]
        big = ((yy - 0.35 * height) / (0.28 * height)) ** 2 + (
            (xx - 0.65 * width) / (0.3 * width)
        ) ** 2 < 1
        small = ((yy - 0.8 * height) / (0.1 * height)) ** 2 + (
            (xx - 0.2 * width) / (0.08 * width)
        ) ** 2 < 1
        paint_tissue(image, big | small, rng)
    return np.clip(image, 0, 255).astype(np.uint8)


def paint_tissue(image: np.ndarray, tissue: np.ndarray, rng: np.random.Generator) -> None:
    """Paint H&E-like tissue (pink stroma, 8 px purple nuclei) into ``image`` where ``tissue``."""
    height, width = tissue.shape
    nuclei = rng.random((height // 8 + 1, width // 8 + 1)) < 0.3
    nuclei = np.kron(nuclei, np.ones((8, 8)))[:height, :width].astype(bool)
    pink, purple = np.array([225, 140, 190]), np.array([120, 60, 160])
    colour = np.where(nuclei[..., None], purple, pink) + rng.normal(0, 12, (height, width, 3))
    image[tissue] = colour[tissue]


def write_slide(path: Path, image: np.ndarray) -> Path:
    height, width = image.shape[:2]
    spec = PyramidSpec(width, height, 3, contract.DEFAULT_MPP, min_size=64)
    write_pyramid(path, spec, lambda row0, rows: image[row0 : row0 + rows])
    return path


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good slide, a truncated copy and a slide of blank glass, in one directory."""
    root = tmp_path_factory.mktemp("slides")
    cohort = root / "cohort"
    cohort.mkdir()
    good = write_slide(cohort / "good.tif", tissue_image(WIDTH, HEIGHT, seed=1))
    truncated = cohort / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    blank = write_slide(cohort / "blank.tif", tissue_image(512, 512, seed=2, blank=True))
    small = write_slide(root / "small.tif", tissue_image(512, 384, seed=3))
    return {"cohort": cohort, "good": good, "truncated": truncated, "blank": blank, "small": small}


@pytest.fixture(scope="module")
def server(triton_server_factory, exported_repository) -> LocalTritonServer:
    return triton_server_factory(exported_repository.repository)


@pytest.fixture(scope="module")
def cohort_run(slides, server, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """``wsi-infer`` on the cohort directory (good, truncated, blank) through ``--url``."""
    out = tmp_path_factory.mktemp("cohort_out")
    argv = [str(slides["cohort"]), "--out", str(out), "--url", server.grpc_url, "--quiet"]
    return cli.main([*argv, "--readers", "2", "--inflight", "4"]), out


def reference_map(slide_path: Path, checkpoint: Path) -> np.ndarray:
    from reference import reference_probability_map
    from wsi_tumor.models.checkpoint import load_model
    from wsi_tumor.slide import open_slide, tissue_mask

    with open_slide(slide_path) as slide:
        mask = tissue_mask(slide, contract.MASK_LEVEL)
        return reference_probability_map(slide, mask, load_model(checkpoint)).prob_map


def summary(out: Path) -> dict[str, dict]:
    data = json.loads((out / SUMMARY_NAME).read_text())
    return {Path(line["slide"]).stem: line for line in data["slides"]}


# --- the map ---------------------------------------------------------------------------------
def test_map_equals_the_pytorch_reference_at_monai_locations(
    cohort_run, slides, exported_repository
) -> None:
    from PIL import Image

    _, out = cohort_run
    outputs = SlideOutputs(out, "good")
    assert outputs.complete()
    prob_map = np.load(outputs.prob_map)
    mask = np.asarray(Image.open(outputs.mask_png)) > 0
    assert prob_map.dtype == np.float32
    assert prob_map.shape == (HEIGHT // contract.PATCH_STRIDE, WIDTH // contract.PATCH_STRIDE)
    assert mask.shape == prob_map.shape
    assert (prob_map[~mask] == 0).all() and (prob_map[mask] > 0).all()
    # rows = y, cols = x: the big ellipse is upper right, the small blob lower left
    assert mask[:8, 12:].sum() > mask[:8, :12].sum() and mask[12:, :6].any()
    expected = reference_map(slides["good"], exported_repository.checkpoint)
    np.testing.assert_allclose(prob_map, expected, rtol=0, atol=MAX_ABS_DIFF)
    assert np.ptp(prob_map[mask]) > 1e-4, "a constant map would hide misplaced patches"


def test_outputs_counts_and_formats(cohort_run) -> None:
    _, out = cohort_run
    report = json.loads((out / "good.json").read_text())
    mask_cells = int(np.count_nonzero(np.load(out / "good.npy")))
    counts = report["counts"]
    assert counts["tissue_cells"] == counts["patches"] == mask_cells
    assert counts["regions"] >= 1 and counts["detections"] == len(
        (out / "good.csv").read_text().splitlines()
    )
    assert set(report["timings_s"]) >= {"mask", "read", "server", "total"}
    assert report["patches_per_s"] > 0
    geojson = json.loads((out / "good.geojson").read_text())
    assert geojson["type"] == "FeatureCollection"
    assert len(geojson["features"]) == counts["detections"]
    from PIL import Image

    heatmap = Image.open(out / "good_heatmap.png")
    assert heatmap.size == (WIDTH // 8, HEIGHT // 8) and heatmap.mode == "RGB"
    assert not list(out.glob(".*.tmp"))


def test_cohort_reports_bad_slides_and_completes_the_good_one(cohort_run) -> None:
    code, out = cohort_run
    assert code == 1
    lines = summary(out)
    assert lines["good"]["status"] == "complete"
    assert lines["truncated"]["status"] == "failed"
    assert lines["truncated"]["error_type"] in ("SlideFormatError", "NotPyramidalError")
    assert "truncated.tif" in lines["truncated"]["error"]
    assert lines["blank"] == {**lines["blank"], "status": "failed", "error_type": "NoTissueError"}
    for stem in ("truncated", "blank"):
        assert not (out / f"{stem}.json").exists() and not (out / f"{stem}.npy").exists()


def test_complete_slides_are_skipped(cohort_run, slides, server) -> None:
    _, out = cohort_run
    before = (out / "good.npy").stat().st_mtime_ns
    argv = [str(slides["good"]), "--out", str(out), "--url", "127.0.0.1:1", "--quiet"]
    assert cli.main(argv) == 0, "a complete slide needs no server at all"
    assert summary(out)["good"]["status"] == "skipped"
    assert (out / "good.npy").stat().st_mtime_ns == before


# --- interruption, --overwrite ---------------------------------------------------------------
def test_interrupted_overwrite_leaves_no_complete_looking_outputs(
    cohort_run, slides, server, tmp_path: Path
) -> None:
    _, out = cohort_run
    first = np.load(out / "good.npy")
    argv = [
        *(sys.executable, str(REPO_ROOT / "client" / "infer_wsi.py")),
        *(str(slides["good"]), "--out", str(out), "--url", server.grpc_url, "--quiet"),
        *("--overwrite", "--regions-per-request", "1", "--inflight", "1"),
    ]
    process = subprocess.Popen([*argv, "--verbose"], stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:  # kill the client as soon as the first answer is in
            if "request 1 done" in line:
                break
        else:
            pytest.fail("the client ended before its first request was answered")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    outputs = SlideOutputs(out, "good")
    assert not outputs.report.exists() and not outputs.complete()
    # without --overwrite, the incomplete slide is computed again (not skipped)
    argv = [str(slides["good"]), "--out", str(out), "--url", server.grpc_url, "--quiet"]
    assert cli.main(argv) == 0
    assert summary(out)["good"]["status"] == "complete"
    np.testing.assert_array_equal(np.load(out / "good.npy"), first)
    assert not list(out.glob(".*.tmp"))


# --- client-side patches to tumor_classifier (the benchmark's way c) ---------------------------
def test_patch_endpoint_gives_the_ensembles_map(cohort_run, slides, server, tmp_path) -> None:
    """The client tiles, sends FP32 patches to the bare classifier and gets the same map."""
    from wsi_bench import patch_client

    _, ensemble_out = cohort_run
    argv = [str(slides["good"]), "--out", str(tmp_path), "--url", server.grpc_url, "--quiet"]
    assert patch_client.main([*argv, "--inflight", "2"]) == 0
    report = json.loads((tmp_path / "good.json").read_text())
    ensemble = json.loads((ensemble_out / "good.json").read_text())
    assert report["model"]["name"] == contract.CLASSIFIER_MODEL
    assert report["counts"]["patches"] == ensemble["counts"]["patches"]
    np.testing.assert_allclose(
        np.load(tmp_path / "good.npy"), np.load(ensemble_out / "good.npy"), rtol=0, atol=1e-6
    )
    # FP32 patches: 224 * 224 * 3 * 4 bytes each; the ensemble's uint8 regions are far fewer
    patch_bytes = contract.PATCH_SIZE**2 * contract.CHANNELS * 4
    assert report["bytes_sent"] == report["counts"]["patches"] * patch_bytes
    assert ensemble["bytes_sent"] < report["bytes_sent"] / 4


# --- dense mode --------------------------------------------------------------------------------
def dense_reference_map(slide_path: Path, checkpoint: Path, cells: int) -> np.ndarray:
    """The dense map computed here: each k x k region read once, PyTorch's dense pass."""
    from wsi_tumor.client.grid import place_grid, plan_dense_regions
    from wsi_tumor.export.parity import torch_dense
    from wsi_tumor.models.checkpoint import load_model
    from wsi_tumor.slide import open_slide, tissue_mask

    model = load_model(checkpoint)
    with open_slide(slide_path) as slide:
        mask = tissue_mask(slide, contract.MASK_LEVEL)
        prob_map = np.zeros(mask.shape, np.float32)
        for region in plan_dense_regions(mask, cells):
            pixels = slide.read_region(region.origin, region.size, 0)[None]
            grid = torch_dense(model, pixels, region.cell_mask[None])[0]
            place_grid(prob_map, region, grid)
    return prob_map


@pytest.mark.parametrize("cells", [contract.DENSE_MIN_CELLS, 16])
def test_dense_mode_map_equals_the_pytorch_dense_pass(
    cohort_run, slides, server, exported_repository, tmp_path: Path, cells: int
) -> None:
    _, exact_out = cohort_run
    argv = [str(slides["good"]), "--out", str(tmp_path), "--url", server.grpc_url, "--quiet"]
    assert cli.main([*argv, "--mode", "dense", "--region-cells", str(cells)]) == 0
    report = json.loads((tmp_path / "good.json").read_text())
    exact = json.loads((exact_out / "good.json").read_text())
    assert report["model"]["name"] == contract.DENSE_MODEL
    assert report["config"]["mode"] == "dense" and report["config"]["region_cells"] == cells
    assert report["counts"]["patches"] == exact["counts"]["patches"]
    dense_map = np.load(tmp_path / "good.npy")
    expected = dense_reference_map(slides["good"], exported_repository.checkpoint, cells)
    np.testing.assert_allclose(dense_map, expected, rtol=0, atol=MAX_ABS_DIFF)
    exact_map = np.load(exact_out / "good.npy")
    assert ((dense_map > 0) == (exact_map > 0)).all(), "the same tissue cells in both modes"
    for name in ("good.csv", "good.geojson", "good_heatmap.png", "good_mask.png"):
        assert (tmp_path / name).is_file()


# --- embedded server --------------------------------------------------------------------------
def test_embedded_server_without_url(slides, exported_repository, tmp_path: Path) -> None:
    argv = [str(slides["small"]), "--out", str(tmp_path), "--quiet"]
    repository = ["--model-repository", str(exported_repository.repository)]
    assert cli.main([*argv, *repository]) == 0
    report = json.loads((tmp_path / "small.json").read_text())
    assert report["counts"]["patches"] > 0
    assert report["config"]["urls"] == []
    expected = reference_map(slides["small"], exported_repository.checkpoint)
    np.testing.assert_allclose(np.load(tmp_path / "small.npy"), expected, atol=MAX_ABS_DIFF)
    # --overwrite recomputes a complete slide
    before = (tmp_path / "small.json").stat().st_mtime_ns
    assert cli.main([*argv, *repository, "--overwrite"]) == 0
    assert (tmp_path / "small.json").stat().st_mtime_ns > before


# --- a server that goes away ---------------------------------------------------------------
def test_server_killed_and_restarted_mid_slide_gives_the_same_map(
    cohort_run, slides, exported_repository, tmp_path: Path
) -> None:
    _, cohort_out = cohort_run
    server = LocalTritonServer(exported_repository.repository).start()
    restarted = threading.Event()
    done_requests: list[int] = []

    def restart() -> None:
        server.kill()  # SIGKILL to the server and its stubs: a crash, not a graceful drain
        time.sleep(1.0)  # clients see connection refused for a while
        server.start()  # same ports
        restarted.set()

    def progress(patches: int) -> None:
        done_requests.append(patches)
        if len(done_requests) == 2:
            threading.Thread(target=restart, daemon=True).start()

    config = InferConfig(
        slides=(slides["good"],),
        out=tmp_path,
        urls=(server.grpc_url,),
        regions_per_request=1,
        inflight=3,
        readers=2,
        retry_timeout=90,
        quiet=True,
    )
    try:
        result = run(config, progress=progress)
    finally:
        server.stop()
    assert restarted.is_set() and result.exit_code == 0
    report = json.loads((tmp_path / "good.json").read_text())
    assert report["counts"]["retries"] > 0, "the restart must have been noticed"
    # finished regions were not sent again: one answer per region
    assert len(done_requests) == report["counts"]["regions"] == report["counts"]["requests"]
    np.testing.assert_array_equal(np.load(tmp_path / "good.npy"), np.load(cohort_out / "good.npy"))


def test_server_gone_for_good_fails_the_slide_and_skips_the_rest(
    slides, exported_repository, tmp_path: Path
) -> None:
    """After a whole retry window without a server, the other slides are not attempted."""
    server = LocalTritonServer(exported_repository.repository).start()
    answered: list[int] = []

    def progress(patches: int) -> None:
        answered.append(patches)
        if len(answered) == 1:
            threading.Thread(target=server.kill, daemon=True).start()

    copy = tmp_path / "in" / "good_copy.tif"
    copy.parent.mkdir()
    shutil.copy(slides["good"], copy)
    config = InferConfig(
        slides=(slides["good"], copy),
        out=tmp_path / "out",
        urls=(server.grpc_url,),
        regions_per_request=1,
        inflight=2,
        readers=1,
        retry_timeout=3,
        quiet=True,
    )
    started = time.monotonic()
    try:
        result = run(config, progress=progress)
    finally:
        server.stop()
    first, second = result.slides
    assert result.exit_code == 1
    assert first.status == second.status == "failed"
    assert first.error_type == second.error_type == "ServerUnavailableError"
    assert second.error is not None and second.error.startswith("not attempted")
    assert not any((tmp_path / "out" / f"{name}.json").exists() for name in ("good", "good_copy"))
    assert time.monotonic() - started < 60  # one retry window, not one per slide


# --- a server whose model differs from the contract --------------------------------------------
WRONG_MODEL = """
import os
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.marker = os.environ.get("WSI_WRONG_MODEL_MARKER", "/nonexistent")

    def execute(self, requests):
        open(self.marker, "a").write("called\\n")
        out = []
        for request in requests:
            grid = np.zeros((1, 8, 8), dtype=np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", grid)]))
        return out
"""


def wrong_config(name: str, inputs: str, output: str) -> str:
    return textwrap.dedent(
        f"""
        name: "{name}"
        backend: "python"
        max_batch_size: 0
        input [ {inputs} ]
        output [ {output} ]
        instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
        """
    )


@pytest.fixture(scope="module")
def wrong_server(tmp_path_factory: pytest.TempPathFactory):
    """``tumor_detector`` with other tensor names; ``tumor_detector_k4`` with other shapes."""
    root = tmp_path_factory.mktemp("wrong_repository")
    marker = root / "called.txt"
    regions, mask, grid = contract.REGIONS_TENSOR, contract.CELL_MASK_TENSOR, contract.GRID_TENSOR
    models = {
        contract.ENSEMBLE_MODEL: wrong_config(
            contract.ENSEMBLE_MODEL,
            '{ name: "IMAGE", data_type: TYPE_UINT8, dims: [ -1, -1, -1, 3 ] }, '
            '{ name: "MASK", data_type: TYPE_BOOL, dims: [ -1, -1, -1 ] }',
            '{ name: "OUTPUT", data_type: TYPE_FP32, dims: [ -1, -1, -1 ] }',
        ),
        "tumor_detector_k4": wrong_config(
            "tumor_detector_k4",
            f'{{ name: "{regions}", data_type: TYPE_UINT8, dims: [ -1, 416, 416, 3 ] }}, '
            f'{{ name: "{mask}", data_type: TYPE_BOOL, dims: [ -1, 4, 4 ] }}',
            f'{{ name: "{grid}", data_type: TYPE_FP32, dims: [ -1, 4, 4 ] }}',
        ),
    }
    for name, config in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
        (root / name / "1" / "model.py").write_text(textwrap.dedent(WRONG_MODEL))
    saved = os.environ.get("WSI_WRONG_MODEL_MARKER")
    os.environ["WSI_WRONG_MODEL_MARKER"] = str(marker)  # the server copies the environment
    try:
        server = LocalTritonServer(root).start()
    finally:
        if saved is None:
            del os.environ["WSI_WRONG_MODEL_MARKER"]
        else:
            os.environ["WSI_WRONG_MODEL_MARKER"] = saved
    try:
        yield server, marker
    finally:
        server.stop()


def test_wrong_model_stops_before_any_request(
    wrong_server, slides, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, marker = wrong_server
    config = InferConfig(
        slides=(slides["good"],), out=tmp_path, urls=(server.grpc_url,), quiet=True
    )
    with pytest.raises(ModelMismatchError, match=f"input '{contract.REGIONS_TENSOR}' missing"):
        run(config)
    with pytest.raises(ModelMismatchError, match=r"shape \[-1, 4, 4\], expected \['N', 8, 8\]"):
        run(config, endpoint=Endpoint("tumor_detector_k4"))
    argv = [str(slides["good"]), "--out", str(tmp_path), "--url", server.grpc_url, "--quiet"]
    assert cli.main(argv) == 2
    assert "does not match the client's contract" in capsys.readouterr().err
    assert not marker.exists(), "no inference request may reach a mismatching model"
    assert not (tmp_path / "good.json").exists() and not (tmp_path / "good_mask.png").exists()


# --- several servers -------------------------------------------------------------------------
def test_two_servers_share_the_cohort_and_one_dying_loses_nothing(
    cohort_run, slides, exported_repository, tmp_path: Path
) -> None:
    """--url A --url B: both answer; B is SIGKILLed mid-cohort and never comes back; the
    cohort completes on A and every map equals the single-server run."""
    _, single_out = cohort_run
    cohort = tmp_path / "in"
    cohort.mkdir()
    for name in ("first", "second", "third"):
        shutil.copy(slides["good"], cohort / f"{name}.tif")
    first = LocalTritonServer(exported_repository.repository).start()
    second = LocalTritonServer(exported_repository.repository).start()
    answered: list[int] = []

    def progress(patches: int) -> None:
        answered.append(patches)
        if len(answered) == 6:
            threading.Thread(target=second.kill, daemon=True).start()

    config = InferConfig(
        slides=(cohort,),
        out=tmp_path / "out",
        urls=(first.grpc_url, second.grpc_url),
        regions_per_request=1,
        inflight=4,
        readers=2,
        retry_timeout=60,
        quiet=True,
    )
    try:
        result = run(config, progress=progress)
    finally:
        first.stop()
        second.stop()
    assert result.exit_code == 0 and not second.running
    reports = {
        name: json.loads((tmp_path / "out" / f"{name}.json").read_text())
        for name in ("first", "second", "third")
    }
    # before the kill both servers answered; after it only the first one
    assert set(reports["first"]["servers"]) == {first.grpc_url, second.grpc_url}
    assert set(reports["third"]["servers"]) == {first.grpc_url}
    for name, report in reports.items():
        assert sum(report["servers"].values()) == report["counts"]["requests"]
        np.testing.assert_array_equal(
            np.load(tmp_path / "out" / f"{name}.npy"), np.load(single_out / "good.npy")
        )
    assert not list((tmp_path / "out").glob(".*.tmp"))


# --- the slide classifier ----------------------------------------------------------------------


def test_slide_json_carries_the_classifier_probability_or_why_not(
    slides, server, exported_repository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a classifier the JSON says why; with one, the probability is the classifier's
    own of the written map's features; a mismatched one stops the run with one line."""
    from wsi_tumor.evaluation.slide_classifier import SlideClassifier
    from wsi_tumor.evaluation.slide_features import map_features
    from wsi_tumor.serving.repository import set_detector_parameter

    argv = [str(slides["good"]), "--overwrite", "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path / "none"), "--url", server.grpc_url]) == 0
    block = json.loads((tmp_path / "none" / "good.json").read_text())["slide_classifier"]
    assert block["probability"] is None and "no slide_classifier.json" in block["reason"]
    prob_map = np.load(tmp_path / "none" / "good.npy")
    cell_um = contract.PATCH_STRIDE * contract.MODEL_MPP
    assert block["features"] == pytest.approx(map_features(prob_map, cell_um))
    assert summary(tmp_path / "none")["good"]["map_max"] == pytest.approx(float(prob_map.max()))

    repository = tmp_path / "repository"
    shutil.copytree(exported_repository.repository, repository)
    classifier = SlideClassifier(
        ("max_logit", "log_area_050"), (0.0, 1.0), (2.0, 0.5), (1.5, -0.7), 0.2, {"slides": []}
    )
    set_detector_parameter(repository, contract.SLIDE_CLASSIFIER_PARAMETER, classifier.to_text())
    out = tmp_path / "fitted"
    assert cli.main([*argv, "--out", str(out), "--model-repository", str(repository)]) == 0
    block = json.loads((out / "good.json").read_text())["slide_classifier"]
    expected = classifier.probability(map_features(np.load(out / "good.npy"), cell_um))
    assert block["probability"] == pytest.approx(expected)
    assert summary(out)["good"]["tumour_probability"] == pytest.approx(expected)

    data = classifier.to_json() | {"features": ["max_logit", "a_feature_from_the_future"]}
    set_detector_parameter(repository, contract.SLIDE_CLASSIFIER_PARAMETER, json.dumps(data))
    capsys.readouterr()
    code = cli.main([*argv, "--out", str(tmp_path / "bad"), "--model-repository", str(repository)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "slide_classifier.json" in err[0] and "a_feature_from_the" in err[0]
    assert not (tmp_path / "bad" / "good.json").exists()
