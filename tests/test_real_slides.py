"""Real scanner files (tests/data/real, licences in its README): formats, readers, resolution,
and the whole client on them through the real server."""

from __future__ import annotations

import json
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from wsi_tumor import contract
from wsi_tumor.data.samples import REAL_HE
from wsi_tumor.errors import MissingResolutionError, SlideFormatError
from wsi_tumor.slide import VirtualSlide, open_slide
from wsi_tumor.slide.resolution import ModelResolutionView, at_model_resolution

REAL = Path(__file__).parent / "data" / "real"
SVS = REAL / "aperio" / "CMU-1-Small-Region.svs"
SVS_J2K = REAL / "aperio-jp2k" / "tcga-cr-7395-01a-01-ts1.svs"
NDPI = REAL / "hamamatsu" / "test3-DAPI-2-387.ndpi"
DICOM = REAL / "dicom" / "CMU-1-Small-Region"


def _pyramidal_ome_tiff(path: Path) -> Path:
    """A real H&E image written as OME-TIFF the way Bio-Formats does: levels in SubIFDs."""
    image = np.asarray(tifffile.imread(REAL_HE))[..., :3]
    big = np.tile(image, (2, 2, 1))[:2048, :2048]
    opts = {"tile": (256, 256), "compression": "jpeg", "photometric": "rgb"}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(
            big,
            subifds=2,
            metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25},
            **opts,
        )
        for factor in (2, 4):
            tif.write(big[::factor, ::factor].copy(), subfiletype=1, **opts)
    return path


# --- formats, readers, resolution metadata ---------------------------------------------------
@pytest.mark.parametrize(
    ("path", "reader", "fmt", "levels", "mpp", "source"),
    [
        (SVS, "cucim", "aperio", [(2220, 2967)], 0.499, "Aperio ImageDescription (MPP)"),
        (SVS_J2K, "cucim", "aperio", [(4443, 3567), (2221, 1783)], None, None),
        (NDPI, "openslide", "hamamatsu", None, 0.2282, "OpenSlide (openslide.mpp-x/y)"),
        (DICOM, "openslide", "dicom", [(2220, 2967)], 0.499, "OpenSlide (openslide.mpp-x/y)"),
        (REAL_HE, "cucim", "ome-tiff", [(1101, 1101)], 0.2271, "OME-XML (PhysicalSizeX/Y)"),
    ],
    ids=["svs-jpeg", "svs-jpeg2000", "ndpi", "dicom-folder", "ome-tiff"],
)
def test_auto_reader_format_levels_and_resolution(path, reader, fmt, levels, mpp, source) -> None:
    start = time.perf_counter()
    with open_slide(path) as slide:
        width, height = slide.level_dimensions[0]
        first = slide.read_region((width // 2, height // 2), (224, 224), 0)
        first_region_s = time.perf_counter() - start
        assert slide.describe() == {
            "reader": reader, "format": fmt, "mpp_source": source, "fallback_from": []
        }  # fmt: skip
        if levels is not None:
            assert list(slide.level_dimensions) == levels  # label, macro, thumbnail left out
        if mpp is None:
            with pytest.raises(MissingResolutionError, match="--mpp"):
                _ = slide.mpp
        else:
            assert slide.mpp == pytest.approx((mpp, mpp), abs=1e-4)
        assert first.shape == (224, 224, 3) and first.std() > 1  # the image, not fill
    assert first_region_s < 30


def test_cucim_and_openslide_read_the_same_real_pixels() -> None:
    for path in (SVS, SVS_J2K):
        with open_slide(path, "cucim") as cucim, open_slide(path, "openslide") as openslide:
            a = cucim.read_region((500, 700), (300, 200), 0)
            b = openslide.read_region((500, 700), (300, 200), 0)
        assert np.abs(a.astype(int) - b).max() <= 1, path.name
    with open_slide(SVS) as svs, open_slide(DICOM) as dicom:  # the same tiles, repackaged
        np.testing.assert_array_equal(
            svs.read_region((0, 0), (2220, 600), 0), dicom.read_region((0, 0), (2220, 600), 0)
        )


def test_cucim_cannot_open_ndpi_so_auto_uses_openslide() -> None:
    with pytest.raises(SlideFormatError, match="cuCIM cannot open"):
        open_slide(NDPI, "cucim")
    with open_slide(NDPI) as slide:
        assert slide.reader_name == "openslide" and slide.level_count == 7


def test_subifd_pyramid_ome_tiff_opens_with_all_levels(tmp_path: Path) -> None:
    path = _pyramidal_ome_tiff(tmp_path / "pyramid.ome.tif")
    with open_slide(path) as slide, open_slide(path, "cucim") as flat:
        assert slide.describe()["reader"] == "tiffslide"
        assert slide.level_dimensions == ((2048, 2048), (1024, 1024), (512, 512))
        assert flat.level_count == 1  # cuCIM does not see SubIFD levels
        assert slide.mpp == (0.25, 0.25)
        np.testing.assert_array_equal(
            slide.read_region((300, 400), (256, 128), 0),
            flat.read_region((300, 400), (256, 128), 0),
        )


def test_files_that_are_not_slides_get_one_line_errors(tmp_path: Path) -> None:
    png = tmp_path / "photo.tif"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(
        SlideFormatError, match=r"photo\.tif: not a whole-slide image, the file is a PNG"
    ):
        open_slide(png)
    text = tmp_path / "notes.svs"
    text.write_text("not a slide at all, just some text that is long enough")
    with pytest.raises(SlideFormatError, match=r"notes\.svs: not a whole-slide image"):
        open_slide(text)
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(SlideFormatError, match="not a DICOM WSI"):
        open_slide(empty)


def _tiff_declaring(path: Path, width: int, height: int, tiles: int) -> Path:
    """A minimal little-endian TIFF whose IFD declares a size and a tile table, no pixels."""
    entries = [
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 7),
        (262, 3, 1, 2), (277, 3, 1, 3), (322, 3, 1, 256), (323, 3, 1, 256),
        (324, 4, tiles, 0), (325, 4, tiles, 0),
    ]  # fmt: skip
    table = 8 + 2 + 12 * len(entries) + 4
    body = bytearray()
    ifd = bytearray(struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        if tag in (324, 325) and count > 1:
            value = table + len(body)
            body += struct.pack(f"<{count}I", *([table] * count if tag == 324 else [1] * count))
        ifd += struct.pack("<HHII", tag, kind, count, value)
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + bytes(ifd) + bytes(body) + bytes(16))
    return path


def test_decompression_bomb_is_refused_before_any_allocation(tmp_path: Path) -> None:
    huge = _tiff_declaring(tmp_path / "huge.tif", 1_000_000, 1_000_000, 1)
    with pytest.raises(SlideFormatError, match=r"huge.tif: declares 1000000 x 1000000 px"):
        open_slide(huge)
    lying = _tiff_declaring(tmp_path / "lying.tif", 100_000, 100_000, 4)
    with pytest.raises(SlideFormatError, match=r"lying.tif: .* its tile table has 4 entries"):
        open_slide(lying)


# --- the view at the model's resolution ------------------------------------------------------
def test_20x_slide_is_resampled_to_the_models_grid() -> None:
    with open_slide(SVS) as slide:
        view, resolution = at_model_resolution(slide)
        assert isinstance(view, ModelResolutionView) and resolution.resampled
        assert resolution.slide_px_per_view_px == pytest.approx(0.243 / 0.499)
        width, height = view.level_dimensions[0]
        assert (width, height) == (4559, 6093)
        from wsi_tumor.slide import mask_shape

        assert mask_shape(view) == (96, 72)  # not the 47 x 35 of level 0
        region = view.read_region((1000, 1200), (672, 672), 0)
        source = slide.read_region((487, 584), (328, 328), 0)
    from PIL import Image

    naive = np.asarray(Image.fromarray(source).resize((672, 672), Image.Resampling.LANCZOS))
    assert np.abs(region[8:-8, 8:-8].astype(int) - naive[8:-8, 8:-8]).mean() < 3.0


def test_camelyon16_scanners_are_read_untouched() -> None:
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)
    for mpp in (0.243, 0.226, 0.25):
        slide = VirtualSlide(image, mpp=mpp)
        view, resolution = at_model_resolution(slide)
        assert view is slide and not resolution.resampled and resolution.level == 0


def test_80x_slide_reads_its_level_1_without_resampling() -> None:
    image = np.random.default_rng(1).integers(0, 256, (1024, 1024, 3), np.uint8)
    slide = VirtualSlide(image, mpp=0.121)
    view, resolution = at_model_resolution(slide)
    assert resolution.level == 1 and not resolution.resampled
    assert view.level_dimensions[0] == slide.level_dimensions[1]
    np.testing.assert_array_equal(
        view.read_region((64, 32), (100, 90), 0), slide.read_region((128, 64), (100, 90), 1)
    )
    assert view.level_downsamples[1] == 2.0


def test_missing_resolution_needs_mpp_which_overrides() -> None:
    slide = VirtualSlide(np.zeros((256, 256, 3), np.uint8), mpp=None, name="bare.tif")
    with pytest.raises(MissingResolutionError, match=r"bare.tif: .* pass --mpp"):
        at_model_resolution(slide)
    _, resolution = at_model_resolution(slide, override=0.5)
    assert resolution.resampled and resolution.mpp_source == "--mpp"


# --- the whole client on real files, real server ----------------------------------------------
@pytest.mark.triton
@pytest.mark.slow
def test_wsi_infer_on_a_cohort_of_real_files(
    triton_server_factory, exported_repository, tmp_path: Path
) -> None:
    """SVS (JPEG, JPEG 2000), NDPI (fluorescence), DICOM folder and OME-TIFF, plus a file that
    is not a slide: the good ones complete, the others fail alone with one line each."""
    from wsi_tumor import infer as cli

    server = triton_server_factory(exported_repository.repository)
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for path in (SVS, SVS_J2K, NDPI, REAL_HE):
        shutil.copy(path, cohort / path.name)
    shutil.copytree(DICOM, cohort / "dicom-cmu")
    _pyramidal_ome_tiff(cohort / "pyramid.ome.tif")
    (cohort / "scan.tif").write_bytes(b"%PDF-1.4\n" + bytes(100))
    out = tmp_path / "out"
    argv = [str(cohort), "--out", str(out), "--url", server.grpc_url, "--quiet", "--mode", "dense"]
    assert cli.main(argv) == 1
    summary = {
        Path(s["slide"]).name: s
        for s in json.loads((out / "cohort_summary.json").read_text())["slides"]
    }
    assert {name: s["status"] for name, s in summary.items()} == {
        "CMU-1-Small-Region.svs": "complete",
        "OS-1-detail.ome.tif": "complete",
        "dicom-cmu": "complete",
        "pyramid.ome.tif": "complete",
        "scan.tif": "failed",
        "tcga-cr-7395-01a-01-ts1.svs": "failed",
        "test3-DAPI-2-387.ndpi": "failed",
    }
    assert summary["scan.tif"]["error_type"] == "SlideFormatError"
    assert "the file is a PDF document" in summary["scan.tif"]["error"]
    assert summary["tcga-cr-7395-01a-01-ts1.svs"]["error_type"] == "MissingResolutionError"
    ndpi = summary["test3-DAPI-2-387.ndpi"]
    assert ndpi["error_type"] == "NotBrightfieldError"
    assert ndpi["reader"]["reader"] == "openslide" and ndpi["reader"]["format"] == "hamamatsu"
    svs = json.loads((out / "CMU-1-Small-Region.json").read_text())
    assert svs["map_shape"] == [96, 72] and svs["resolution"]["resampled"]
    assert svs["reader"] == {
        "reader": "cucim",
        "format": "aperio",
        "mpp_source": "Aperio ImageDescription (MPP)",
        "fallback_from": [],
    }
    candidates = np.loadtxt(out / "CMU-1-Small-Region.csv", delimiter=",", ndmin=2)
    assert len(candidates) and (candidates[:, 1] < 2220).all() and (candidates[:, 2] < 2967).all()
    dicom = json.loads((out / "dicom-cmu.json").read_text())
    assert dicom["reader"]["reader"] == "openslide" and dicom["reader"]["format"] == "dicom"
    np.testing.assert_allclose(
        np.load(out / "dicom-cmu.npy"), np.load(out / "CMU-1-Small-Region.npy"), atol=1e-6
    )
    pyramid = json.loads((out / "pyramid.json").read_text())
    assert pyramid["reader"]["reader"] == "tiffslide" and not pyramid["resolution"]["resampled"]
    # the JPEG 2000 slide states no resolution: --mpp gives it
    assert cli.main([str(cohort / SVS_J2K.name), *argv[1:], "--mpp", "0.25"]) == 0
    j2k = json.loads((out / "tcga-cr-7395-01a-01-ts1.json").read_text())
    assert j2k["resolution"]["mpp_source"] == "--mpp" and j2k["map_shape"] == [56, 70]
    # exact mode on the real OME-TIFF (0.227 um/px: within 10 % of the model, read 1:1)
    exact = tmp_path / "exact"
    assert (
        cli.main(
            [str(cohort / REAL_HE.name), "--out", str(exact), "--url", server.grpc_url, "--quiet"]
        )
        == 0
    )
    report = json.loads((exact / "OS-1-detail.json").read_text())
    assert report["mode"] == "exact" and report["map_shape"] == [18, 18]
    assert report["counts"]["patches"] == int(np.count_nonzero(np.load(exact / "OS-1-detail.npy")))
    assert report["resolution"]["model_mpp"] == contract.MODEL_MPP
