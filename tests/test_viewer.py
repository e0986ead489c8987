"""``wsi-view`` against a real cohort: ``wsi-infer`` through the real tritonserver, then the
real viewer process over HTTP and, where Debian's Chromium is installed, in a headless
browser driven by Selenium (checked on screenshot pixels).

The cohort (written once per module, dense mode, a seeded random-init model):

- ``good``: 1024 x 768 px at 0.243 um/px, with an ASAP XML ground truth;
- ``coarse``: 512 x 384 px at 0.486 um/px (the map is at the model's 0.243: scale 1/2);
- ``moved``: moved away after the run (its page shows why there is no slide);
- ``linked``: a symbolic link to a file outside the slides folder (refused);
- ``truncated``: a third of a file (failed).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from test_client import tissue_image
from wsi_tumor import contract
from wsi_tumor import infer as infer_cli
from wsi_tumor.annotations.formats import Polygon, write_asap_xml
from wsi_tumor.data.tiff_writer import PyramidSpec, write_pyramid
from wsi_tumor.viewer import layers
from wsi_tumor.viewer.cohort import Cohort
from wsi_tumor.viewer.deepzoom import DeepZoom

pytestmark = [pytest.mark.triton, pytest.mark.slow]

GT_POLYGON = [[520.0, 90.0], [900.0, 120.0], [930.0, 420.0], [560.0, 460.0]]


def write_slide(path: Path, image: np.ndarray, mpp: float = contract.DEFAULT_MPP) -> Path:
    height, width = image.shape[:2]
    spec = PyramidSpec(width, height, 3, mpp, min_size=64)
    write_pyramid(path, spec, lambda row0, rows: image[row0 : row0 + rows])
    return path


@dataclass(frozen=True)
class ViewerCohort:
    out: Path
    slides: Path
    ground_truth: Path
    url: str
    log: Path


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("content-type", "")


def get_json(url: str) -> dict:
    status, body, _ = get(url)
    assert status == 200, (url, status, body[:200])
    return json.loads(body)


def raw_status(base: str, path: str) -> int:
    """Status of a GET of ``path`` sent byte for byte (no client-side normalisation)."""
    host, port = base.removeprefix("http://").rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def start_viewer(out: Path, log: Path, *args: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "wsi_tumor.viewer.cli", str(out), "--port", "0", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, start_new_session=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "http://127.0.0.1:" in line, f"wsi-view printed {line!r}; log: {log.read_text()}"
    return process, line.split(" at ")[-1].strip()


@pytest.fixture(scope="module")
def cohort(triton_server_factory, exported_repository, tmp_path_factory) -> ViewerCohort:
    root = tmp_path_factory.mktemp("viewer")
    slides, elsewhere, truth = root / "slides", root / "elsewhere", root / "truth"
    for folder in (slides, elsewhere, truth):
        folder.mkdir()
    good = write_slide(slides / "good.tif", tissue_image(1024, 768, seed=1))
    write_slide(slides / "coarse.tif", tissue_image(512, 384, seed=4), mpp=0.486)
    write_slide(slides / "moved.tif", tissue_image(512, 384, seed=5))
    (slides / "linked.tif").symlink_to(
        write_slide(elsewhere / "linked.tif", tissue_image(512, 384, 6))
    )
    (slides / "truncated.tif").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    write_asap_xml(truth / "good.xml", [Polygon("Annotation 0", "_0", np.array(GT_POLYGON))])
    server = triton_server_factory(exported_repository.repository)
    out = root / "out"
    argv = [str(slides), "--out", str(out), "--url", server.grpc_url, "--mode", "dense"]
    assert infer_cli.main([*argv, "--quiet"]) == 1  # the truncated slide fails
    shutil.move(slides / "moved.tif", elsewhere / "moved.tif")
    # an output that is a link out of the output folder (same bytes: the checksum matches)
    heatmap = out / "good_heatmap.png"
    shutil.move(heatmap, elsewhere / heatmap.name)
    heatmap.symlink_to(elsewhere / heatmap.name)
    log = root / "wsi-view.log"
    process, url = start_viewer(out, log, "--ground-truth", str(truth), "--workers", "2")
    try:
        yield ViewerCohort(out, slides, truth, url, log)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)


# --- the cohort and its slides --------------------------------------------------------------
def test_cohort_lists_every_slide_with_status_score_and_counts(cohort) -> None:
    data = get_json(cohort.url + "api/cohort")
    rows = {row["name"]: row for row in data["slides"]}
    assert sorted(rows) == ["coarse", "good", "linked", "moved", "truncated"]
    assert rows["truncated"]["status"] == "failed" and rows["truncated"]["reason"]
    for name in ("good", "coarse", "moved", "linked"):
        row = rows[name]
        report = json.loads((cohort.out / f"{name}.json").read_text())
        assert row["status"] == "complete", row
        np.testing.assert_allclose(row["score"], np.load(cohort.out / f"{name}.npy").max())
        assert row["score_source"] == "map maximum"
        assert row["candidates"] == report["counts"]["detections"]
        assert row["candidates"] == len((cohort.out / f"{name}.csv").read_text().splitlines())
        assert row["damaged_regions"] == 0 and row["mode"] == "dense"
        assert row["precision"] == "fp32"  # the exported repository states it
    assert [rows[n]["slide_available"] for n in ("good", "coarse", "moved", "linked")] == [
        True,
        True,
        False,
        False,
    ]


def test_slide_classifier_and_precision_from_the_report(cohort, tmp_path) -> None:
    out = tmp_path / "out"
    shutil.copytree(cohort.out, out, symlinks=True)
    report_path = out / "good.json"
    report = json.loads(report_path.read_text())
    report.update(slide_classifier={"probability": 0.875, "scorer": "s.json v1"}, precision="int8")
    report_path.write_text(json.dumps(report))
    coarse = json.loads((out / "coarse.json").read_text())
    coarse["slide_classifier"] = {"probability": None, "reason": "no scorer in the repository"}
    (out / "coarse.json").write_text(json.dumps(coarse))
    rows = {row["name"]: row for row in Cohort(out).rows()}
    assert (rows["good"]["score"], rows["good"]["score_source"]) == (0.875, "slide classifier")
    assert rows["good"]["precision"] == "int8"
    np.testing.assert_allclose(rows["coarse"]["score"], np.load(out / "coarse.npy").max())
    assert rows["coarse"]["score_source"] == "map maximum"
    assert "no scorer" in Cohort(out)["coarse"].score_note


def test_slide_json_places_map_candidates_and_ground_truth(cohort) -> None:
    good = get_json(cohort.url + "api/slides/good")
    assert good["slide"]["available"] and (good["slide"]["width"], good["slide"]["height"]) == (
        1024,
        768,
    )
    assert good["map"]["width"] == 16 * 64 and good["map"]["cell"] == 64
    csv = np.loadtxt(cohort.out / "good.csv", delimiter=",", ndmin=2)
    expected = csv[np.argsort(-csv[:, 0], kind="stable")]
    listed = np.asarray(good["candidate_list"]).reshape(-1, 3)
    np.testing.assert_allclose(listed, expected, atol=1e-4)
    assert good["ground_truth"]["file"] == "good.xml"
    np.testing.assert_allclose(good["ground_truth"]["outlines"][0]["points"], GT_POLYGON)
    assert good["facts"]["resolution"]["slide_px_per_view_px"] == 1.0
    assert {"reader", "timings_s", "counts"} <= set(good["facts"])
    coarse = get_json(cohort.url + "api/slides/coarse")  # 0.486 um/px: a model px = 1/2 px
    report = json.loads((cohort.out / "coarse.json").read_text())
    assert report["resolution"]["slide_px_per_view_px"] == pytest.approx(0.5)
    assert coarse["map"]["cell"] == pytest.approx(32.0)
    assert coarse["map"]["width"] == pytest.approx(coarse["map"]["cols"] * 32.0)
    assert coarse["map"]["width"] >= 512 > coarse["map"]["width"] - 32


def test_overlay_is_the_coloured_map_transparent_off_tissue_and_below_threshold(cohort) -> None:
    from PIL import Image

    prob_map = np.load(cohort.out / "good.npy")
    tissue = np.asarray(Image.open(cohort.out / "good_mask.png")) > 0
    for threshold in (0.0, float(np.median(prob_map[tissue]))):
        status, body, kind = get(f"{cohort.url}slides/good/overlay.png?threshold={threshold}")
        assert (status, kind) == (200, "image/png")
        rgba = np.asarray(Image.open(io.BytesIO(body)))
        assert rgba.shape == (*prob_map.shape, 4)
        shown = tissue & (prob_map >= threshold)
        np.testing.assert_array_equal(rgba[..., 3] > 0, shown)
        np.testing.assert_array_equal(rgba, layers.render_map(prob_map, tissue, threshold))
    from matplotlib import colormaps

    expected = np.rint(colormaps["jet"](np.rint(prob_map * 255) / 255)[..., :3] * 255)
    np.testing.assert_allclose(rgba[..., :3][shown], expected[shown], atol=1)
    assert get(cohort.url + "slides/good/overlay.png?threshold=2")[0] == 400


def test_tiles_at_every_level_equal_the_readers_region(cohort) -> None:
    """Every tile equals openslide's DeepZoomGenerator (the reference) from the product's
    reader; where a Deep Zoom level is a pyramid level, the tile is exactly the reader's
    region there; over HTTP each level's tile decodes to the same pixels (JPEG-close)."""
    import openslide
    from openslide.deepzoom import DeepZoomGenerator
    from PIL import Image

    from wsi_tumor.slide import open_slide

    path = cohort.slides / "good.tif"
    reference = DeepZoomGenerator(openslide.OpenSlide(path))
    with open_slide(path) as slide:
        zoom = DeepZoom(slide)
        assert zoom.level_dimensions == reference.level_dimensions
        assert zoom.level_tiles == reference.level_tiles
        downsamples = [round(d) for d in slide.level_downsamples]
        for level in range(zoom.level_count):
            down = 2 ** (zoom.level_count - 1 - level)
            for col in range(zoom.level_tiles[level][0]):
                for row in range(zoom.level_tiles[level][1]):
                    tile = zoom.tile(level, col, row)
                    expected = np.asarray(reference.get_tile(level, (col, row)).convert("RGB"))
                    np.testing.assert_array_equal(tile, expected)
                    if down in downsamples:
                        spec = zoom.tile_read(level, col, row)
                        region = slide.read_region(spec.location, spec.size, spec.level)
                        assert spec.level == downsamples.index(down)
                        np.testing.assert_array_equal(tile, region)
            status, body, kind = get(f"{cohort.url}slides/good/tiles/{level}/0_0.jpeg")
            assert (status, kind) == (200, "image/jpeg")
            served = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.int16)
            tile = zoom.tile(level, 0, 0)
            assert served.shape == tile.shape
            if min(tile.shape[:2]) >= 32:  # JPEG's 4:2:0 chroma blurs the tiny tiles more
                assert np.abs(served - tile).mean() < 4.0


# --- safety -----------------------------------------------------------------------------------
def test_paths_outside_the_cohort_get_404_and_are_logged(cohort) -> None:
    refused = [
        "/../../../etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2fapp.py",
        "/static/..%2f..%2fcontract.py",
        "/slides/..%2f..%2fetc%2fpasswd",
        "/api/slides/..",
        "/api/slides/nonexistent",
        "/slides/nonexistent/tiles/0/0_0.jpeg",
        "/slides/good/tiles/0/0_0.png",
        "/slides/good/tiles/99/0_0.jpeg",
        "/slides/good/tiles/10/9_9.jpeg",
        "/slides/good/files/cohort_summary.json",
        "/slides/good/files/coarse.npy",
        "/slides/good/files/..%2fcoarse.npy",
        f"/slides/good/files/{cohort.out / 'good.npy'}",
        "/slides/good/files/good_heatmap.png",  # a link out of the output folder
        "/slides/linked/tiles/0/0_0.jpeg",  # a slide linked from outside its folder
        "/slides/moved/tiles/0/0_0.jpeg",
        "/slides/truncated/overlay.png",
        "/etc/passwd",
    ]
    for path in refused:
        assert raw_status(cohort.url, path) == 404, path
    assert raw_status(cohort.url, "/slides/good/files/good.npy") == 200
    assert raw_status(cohort.url, "/static/openseadragon/LICENSE.txt") == 200
    time.sleep(0.5)
    log = cohort.log.read_text()
    assert log.count(" 404 GET ") >= len(refused), log[-2000:]
    assert "good_heatmap.png: refused" in log and "linked.tif: refused" in log


def test_moved_slide_shows_why_and_the_others_still_open(cohort) -> None:
    moved = get_json(cohort.url + "api/slides/moved")
    assert not moved["slide"]["available"]
    assert "moved.tif not found" in moved["slide"]["message"]
    assert moved["map"] is not None and moved["slide"]["width"] == 512  # from its report
    linked = get_json(cohort.url + "api/slides/linked")
    assert "leads out of its folder" in linked["slide"]["message"]
    truncated = get_json(cohort.url + "api/slides/truncated")
    assert truncated["status"] == "failed" and "cannot be read" in truncated["slide"]["message"]
    assert get(cohort.url + "slides/coarse/tiles/9/0_0.jpeg")[0] == 200
    assert get(cohort.url + "slides/moved")[0] == 200  # the page itself opens


def test_many_tiles_in_flight_leave_the_server_answering(cohort) -> None:
    """63 cold tile requests at once (2 workers): the JSON is answered meanwhile and every
    tile comes back."""
    from concurrent.futures import ThreadPoolExecutor

    tiles_of_levels = {9: (3, 2), 8: (2, 1), 7: (1, 1)}  # the coarse slide's finest levels
    urls = [
        f"{cohort.url}slides/coarse/tiles/{level}/{col}_{row}.jpeg?n={n}"
        for n in range(7)
        for level, (cols, rows) in tiles_of_levels.items()
        for col in range(cols)
        for row in range(rows)
    ]
    with ThreadPoolExecutor(len(urls)) as pool:
        tiles = [pool.submit(get, url) for url in urls]
        time.sleep(0.05)
        cohort_page = get_json(cohort.url + "api/cohort")
        statuses = [future.result()[0] for future in tiles]
    assert len(cohort_page["slides"]) == 5
    assert statuses == [200] * len(urls)


def test_tile_service_bounds_workers_and_cache(tmp_path) -> None:
    """At most ``workers`` tiles are cut at once, the event loop keeps running meanwhile,
    and the cache never holds more than its cap."""
    import asyncio
    import threading

    from wsi_tumor.viewer.tiles import ByteCache, TileService

    path = write_slide(tmp_path / "s.tif", tissue_image(1024, 768, seed=2))
    service = TileService({"s": path}, workers=2, cache_bytes=60_000)
    zoom = service.pyramid("s")
    active, peak, lock = [0], [0], threading.Lock()
    read = zoom.slide.read_region

    def counting_read(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.02)
            return read(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    zoom.slide.read_region = counting_read  # type: ignore[method-assign]
    keys = [("s", 10, c, r) for c in range(5) for r in range(4)] + [("s", 9, 0, 0)] * 5

    async def run() -> tuple[list[bytes | None], int]:
        ticks = 0
        work = asyncio.gather(*(service.tile(key) for key in keys))
        while not work.done():
            ticks += 1
            await asyncio.sleep(0.001)
        return await work, ticks

    tiles, ticks = asyncio.run(run())
    service.close()
    assert peak[0] == 2 and ticks > 10
    assert all(tile is not None and tile[:2] == b"\xff\xd8" for tile in tiles)
    assert 0 < service.cache.size <= 60_000 and len(service.cache) < 21
    cache = ByteCache(10)
    for key in range(5):
        cache.put(key, b"abcd")
    assert cache.size == 8 and cache.get(0) is None and cache.get(4) == b"abcd"


def test_cli_refuses_what_is_not_a_cohort_and_tells_loopback_apart(tmp_path, capsys) -> None:
    from wsi_tumor.viewer.cli import is_loopback, main

    assert main([str(tmp_path)]) == 2
    assert "not a wsi-infer output directory" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.1.2.3")] == [
        True,
        True,
        True,
        False,
        False,
    ]


# --- in a real browser ------------------------------------------------------------------------
def chromium() -> tuple[str, str] | None:
    """(browser, chromedriver) of the system Chromium, or None."""
    names = ("chromium", "chromium-browser", "google-chrome")
    found = next((shutil.which(name) for name in names if shutil.which(name)), None)
    driver = shutil.which("chromedriver")
    return (found, driver) if found and driver else None


@pytest.fixture(scope="module")
def browser():
    paths = chromium()
    if paths is None:
        pytest.skip(
            "no system Chromium with chromedriver (make setup installs Debian's chromium "
            "and chromium-driver where apt-get is available)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1100,800",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(paths[1]))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition: str, timeout: float = 60.0) -> object:
    """Poll the JavaScript expression ``condition`` until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return {condition};")
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        time.sleep(0.1)


def viewer_shot(driver) -> np.ndarray:
    """The viewer element's pixels (H, W, 3) once every image is drawn."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    wait_for(driver, "wsiView.fullyLoaded() && wsiView.overlayLoaded")
    time.sleep(0.4)  # the frame after the last change
    png = driver.find_element(By.ID, "viewer").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def on_screen(driver, points: np.ndarray) -> np.ndarray:
    """Level-0 (x, y) points -> (column, row) pixels of the viewer element."""
    script = """
        return arguments[0].map(([x, y]) => {
            const p = wsiView.viewer.viewport.viewportToViewerElementCoordinates(
                new OpenSeadragon.Point(x / wsiView.width, y / wsiView.width));
            return [p.x, p.y];
        });"""
    return np.rint(np.asarray(driver.execute_script(script, points.tolist()))).astype(int)


def open_slide_page(driver, cohort: ViewerCohort, name: str) -> None:
    driver.get(f"{cohort.url}slides/{name}")
    wait_for(driver, "window.wsiView && wsiView.ready")


def press(driver, element_id: str, *keys: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).send_keys(*keys)


@pytest.mark.browser
def test_browser_cohort_page_lists_slides_by_score(cohort, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(cohort.url)
    wait_for(browser, "document.body.dataset.ready")
    rows = browser.find_elements(By.CSS_SELECTOR, "#cohort-table tbody tr")
    names = [row.get_attribute("data-name") for row in rows]
    expected = sorted(
        get_json(cohort.url + "api/cohort")["slides"],
        key=lambda r: (r["score"] is None, -(r["score"] or 0), r["name"]),
    )
    assert names == [row["name"] for row in expected]  # sorted by tumour score, highest first
    for row, line in zip(rows, expected, strict=True):
        score = row.find_element(By.CSS_SELECTOR, ".score").text
        assert score == ("\u2013" if line["score"] is None else f"{line['score']:.3f} (map max)")
    assert "failed" in rows[names.index("truncated")].text
    browser.find_element(By.ID, "filter-status").send_keys("failed")
    assert [
        r.get_attribute("data-name")
        for r in browser.find_elements(By.CSS_SELECTOR, "#cohort-table tbody tr")
    ] == ["truncated"]
    browser.get(cohort.url)
    wait_for(browser, "document.body.dataset.ready")
    browser.find_element(By.LINK_TEXT, "good").click()
    wait_for(browser, "window.wsiView && wsiView.ready")
    assert browser.current_url.endswith("/slides/good")


@pytest.mark.browser
def test_browser_slide_page_draws_tiles_and_overlay_and_the_opacity_slider(cohort, browser) -> None:
    """On the screenshot: where the overlay is off, the pixels are the slide's own (tiles at
    the right place); fully opaque, tissue cells show their probability's colour; at half
    opacity, the mean of both; with the threshold above every cell, the slide again."""
    from matplotlib import colormaps
    from PIL import Image
    from selenium.webdriver.common.keys import Keys

    from wsi_tumor.slide import open_slide

    open_slide_page(browser, cohort, "good")
    # the outlines and markers are HTML over the canvas: hidden so that what is compared is
    # what the canvas draws
    browser.execute_script(
        "document.querySelectorAll('.outlines, .marker').forEach(e => e.style.display = 'none')"
    )
    prob_map = np.load(cohort.out / "good.npy")
    tissue = np.asarray(Image.open(cohort.out / "good_mask.png")) > 0
    rows, cols = np.nonzero(tissue)
    centres = np.stack([(cols + 0.5) * 64, (rows + 0.5) * 64], axis=1)
    points = on_screen(browser, centres)
    shot_size = viewer_shot(browser).shape
    # away from the zoom buttons (top left) and the navigator (bottom left)
    usable = (points[:, 0] > 220) & (points[:, 1] > 60) & (points[:, 0] < shot_size[1] - 5)
    usable &= points[:, 1] < shot_size[0] - 5
    assert usable.sum() >= 20, "too few tissue cells on screen to check"
    points, rows, cols = points[usable], rows[usable], cols[usable]
    at = (points[:, 1], points[:, 0])

    press(browser, "opacity", Keys.HOME)
    bare = viewer_shot(browser)
    scale = np.diff(on_screen(browser, np.array([[0.0, 0.0], [100.0, 0.0]]))[:, 0])[0] / 100
    with open_slide(cohort.slides / "good.tif") as slide:
        level0 = slide.read_region((0, 0), slide.level_dimensions[0], 0).astype(np.float64)
    half = 6  # a 13 x 13 screen patch against the level-0 pixels under it
    errors = []
    for (x, y), (col, row) in zip(centres[usable], points, strict=True):
        r = half / scale
        expected = level0[int(y - r) : int(y + r) + 1, int(x - r) : int(x + r) + 1].mean((0, 1))
        seen = bare[row - half : row + half + 1, col - half : col + half + 1].mean((0, 1))
        errors.append(np.abs(seen - expected).max())
    # measured: median 2.4, 90th percentile 6; tiles drawn 20 screen px off: 18 and 61
    assert np.median(errors) < 6 and np.percentile(errors, 90) < 12, errors
    press(browser, "opacity", Keys.END)
    opaque = viewer_shot(browser)
    colours = np.rint(colormaps["jet"](np.rint(prob_map * 255) / 255)[..., :3] * 255)
    np.testing.assert_allclose(opaque[at], colours[rows, cols], atol=3)
    press(browser, "opacity", *[Keys.ARROW_LEFT] * 10)  # 1.0 -> 0.5 in steps of 0.05
    assert browser.execute_script("return wsiView.overlay.getOpacity();") == pytest.approx(0.5)
    halfway = viewer_shot(browser)
    np.testing.assert_allclose(halfway[at], (bare[at] + opaque[at]) / 2, atol=3)
    assert np.abs(halfway[at] - opaque[at]).max() > 20
    press(browser, "threshold", Keys.END)  # threshold 1: no cell reaches it
    wait_for(browser, "wsiView.overlayLoaded")
    np.testing.assert_allclose(viewer_shot(browser)[at], bare[at], atol=3)


@pytest.mark.browser
def test_browser_candidate_click_moves_the_viewport_to_it(cohort, browser) -> None:
    from selenium.webdriver.common.by import By

    open_slide_page(browser, cohort, "good")
    candidates = get_json(cohort.url + "api/slides/good")["candidate_list"]
    assert candidates, "the cohort's slide has no candidate to click"
    _, x, y = candidates[0]
    wait_for(browser, "wsiView.fullyLoaded()")
    before = browser.execute_script("return wsiView.viewer.viewport.getZoom(true);")
    assert np.hypot(*(np.asarray(wait_for(browser, "wsiView.centre()")) - (x, y))) > 64
    browser.find_elements(By.CSS_SELECTOR, "#candidates button")[0].click()
    near = f"Math.hypot(wsiView.centre()[0] - {x}, wsiView.centre()[1] - {y}) < 8"
    wait_for(browser, near, timeout=10)
    assert browser.execute_script("return wsiView.viewer.viewport.getZoom(true);") > 1.3 * before


@pytest.mark.browser
def test_browser_moved_slide_page_says_why(cohort, browser) -> None:
    from selenium.webdriver.common.by import By

    open_slide_page(browser, cohort, "moved")
    message = browser.find_element(By.ID, "message")
    assert message.is_displayed() and "moved.tif not found" in message.text
    open_slide_page(browser, cohort, "coarse")
    shown = browser.find_element(By.ID, "message")  # at most the score's note (no classifier)
    assert "not found" not in shown.text and "moved.tif" not in shown.text, shown.text
    wait_for(browser, "wsiView.fullyLoaded()")
