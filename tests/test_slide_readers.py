"""Slide readers on real tiled JPEG TIFFs: cuCIM and OpenSlide agree, bad files fail typed."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tifffile

from wsi_tumor.data.samples import REAL_HE
from wsi_tumor.errors import (
    ConfigError,
    MissingResolutionError,
    NotPyramidalError,
    ReaderUnavailableError,
    SlideError,
    SlideFormatError,
    SlideNotFoundError,
)
from wsi_tumor.slide import FILL_VALUE, READERS, VirtualSlide, inspect_slide, open_slide
from wsi_tumor.slide.image import halve

MPP = 0.243
WIDTH, HEIGHT, TILE = 2048, 1536, 256


def tissue_image(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> npt.NDArray[np.uint8]:
    """Glass with an H&E-coloured textured ellipse, stroma band and nuclei."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.float32)
    image[:] = (236, 234, 238)
    yy, xx = np.mgrid[0:height, 0:width]
    blob = ((yy - 0.45 * height) / (0.33 * height)) ** 2 + (
        (xx - 0.45 * width) / (0.35 * width)
    ) ** 2 < 1
    image[blob] = (222, 150, 196)
    image[(xx > 0.75 * width) & (xx < 0.9 * width) & (yy > 0.1 * height) & (yy < 0.8 * height)] = (
        200, 120, 190)  # fmt: skip
    for cy, cx in rng.integers(0, (height, width), (400, 2)):
        if blob[cy, cx]:
            image[max(cy - 4, 0) : cy + 4, max(cx - 4, 0) : cx + 4] = (120, 70, 160)
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_pyramid_tiff(
    path: Path,
    image: npt.NDArray[np.uint8],
    levels: int = 4,
    mpp: float | None = MPP,
    subifds: bool = False,
) -> list[npt.NDArray[np.uint8]]:
    """Tiled JPEG TIFF, level k = level k-1 halved; reduced pages (or SubIFDs); mpp tags."""
    pyramid = [image]
    while len(pyramid) < levels:
        pyramid.append(halve(pyramid[-1]))
    resolution: dict[str, Any] = {} if mpp is None else {
        "resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}  # fmt: skip
    options: dict[str, Any] = {
        "tile": (TILE, TILE),
        "compression": "jpeg",
        "photometric": "rgb",
        "metadata": None,
    }
    with tifffile.TiffWriter(path) as tif:
        tif.write(pyramid[0], subifds=levels - 1 if subifds else None, **resolution, **options)
        for level in pyramid[1:]:
            tif.write(level, subfiletype=1, **options)
    return pyramid


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slides") / "pyramid.tif"
    write_pyramid_tiff(path, tissue_image())
    return path


@pytest.fixture(scope="module")
def decoded_levels(slide_file: Path) -> list[npt.NDArray[np.uint8]]:
    """Each level decoded by tifffile/imagecodecs: the reference pixels."""
    with tifffile.TiffFile(slide_file) as tif:
        return [page.asarray() for page in tif.pages]


def expected_region(
    level_image: npt.NDArray[np.uint8], col: int, row: int, w: int, h: int
) -> npt.NDArray[np.uint8]:
    out = np.full((h, w, 3), FILL_VALUE, np.uint8)
    lh, lw = level_image.shape[:2]
    c0, r0, c1, r1 = max(col, 0), max(row, 0), min(col + w, lw), min(row + h, lh)
    if c1 > c0 and r1 > r0:
        out[r0 - row : r1 - row, c0 - col : c1 - col] = level_image[r0:r1, c0:c1]
    return out


def test_import_is_cheap() -> None:
    code = (
        "import sys, wsi_tumor.slide; "
        "bad = [m for m in ('cucim', 'openslide', 'skimage') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("reader", READERS)
def test_metadata(slide_file: Path, reader: str) -> None:
    with open_slide(slide_file, reader, require_pyramid=True) as slide:
        assert slide.level_count == 4
        assert slide.level_dimensions == ((2048, 1536), (1024, 768), (512, 384), (256, 192))
        assert slide.level_downsamples == (1.0, 2.0, 4.0, 8.0)
        np.testing.assert_allclose(slide.mpp, (MPP, MPP), rtol=1e-9)
        assert slide.path == slide_file


# (level, level-0 location, size): inside, crossing right/bottom border, negative, outside
REGIONS = [
    (0, (300, 200), (672, 672)),
    (0, (1900, 1400), (224, 224)),
    (0, (-50, -30), (128, 96)),
    (3, (800, 400), (100, 60)),
    (3, (1600, 1200), (100, 60)),
    (3, (-16, 1000), (40, 40)),
    (0, (5000, 10), (16, 16)),
]


@pytest.mark.parametrize(("level", "location", "size"), REGIONS)
def test_backends_return_same_pixels(
    slide_file: Path,
    decoded_levels: list[npt.NDArray[np.uint8]],
    level: int,
    location: tuple[int, int],
    size: tuple[int, int],
) -> None:
    ds = 2**level
    expected = expected_region(decoded_levels[level], location[0] // ds, location[1] // ds, *size)
    for reader in READERS:
        with open_slide(slide_file, reader) as slide:
            pixels = slide.read_region(location, size, level)
        assert pixels.dtype == np.uint8 and pixels.flags["C_CONTIGUOUS"]
        assert pixels.shape == (size[1], size[0], 3)
        # Measured: cuCIM, OpenSlide and tifffile (all libjpeg-turbo) decode identically.
        np.testing.assert_array_equal(pixels, expected, err_msg=reader)


def test_real_sample_opens_through_both_readers() -> None:
    reference = tifffile.imread(REAL_HE)
    regions = {}
    for reader in READERS:
        with open_slide(REAL_HE, reader) as slide:
            assert slide.level_dimensions == ((1101, 1101),)
            np.testing.assert_allclose(slide.mpp, (0.2270972, 0.2271024), rtol=1e-6)
            regions[reader] = slide.read_region((0, 0), (1101, 1101))
        # The file's JPEG tiles are JFIF YCbCr under Photometric=RGB; converted on read.
        # Max 1 grey level from tifffile's decoding (YCbCr->RGB rounding), H&E colours.
        diff = np.abs(regions[reader].astype(int) - reference)
        assert diff.max() <= 1, reader
        assert (diff > 0).mean() < 0.01
    red, green, blue = regions["cucim"].reshape(-1, 3).mean(axis=0)
    assert red > green + 15 and blue > green + 30  # pink/purple, not the raw green YCbCr


def test_real_sample_is_not_a_pyramid() -> None:
    with pytest.raises(NotPyramidalError, match=r"OS-1-detail\.ome\.tif: single-level"):
        open_slide(REAL_HE, require_pyramid=True)


@pytest.mark.parametrize("reader", READERS)
def test_bad_files_raise_typed_errors(tmp_path: Path, slide_file: Path, reader: str) -> None:
    with pytest.raises(SlideNotFoundError, match=r"missing\.tif: slide file does not exist"):
        open_slide(tmp_path / "missing.tif", reader)

    data = slide_file.read_bytes()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideFormatError, match=r"truncated\.tif: truncated"):
        open_slide(truncated, reader)
    header_only = tmp_path / "header.tif"
    header_only.write_bytes(data[:6])
    with pytest.raises(SlideFormatError, match=r"header\.tif: 6 bytes is too short"):
        open_slide(header_only, reader)

    png = tmp_path / "picture.tif"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, format="PNG")
    with pytest.raises(
        SlideFormatError, match=r"picture\.tif: not a whole-slide image, the file is a PNG"
    ):
        open_slide(png, reader)
    text = tmp_path / "notes.tif"
    text.write_text("this is not a slide\n")
    with pytest.raises(SlideFormatError, match=r"notes\.tif: not a whole-slide image"):
        open_slide(text, reader)

    stripped = tmp_path / "stripped.tif"
    tifffile.imwrite(stripped, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    with pytest.raises(SlideFormatError, match=r"stripped\.tif: level 0 is not tiled"):
        open_slide(stripped, reader)

    single = tmp_path / "single.tif"
    write_pyramid_tiff(single, tissue_image(512, 512), levels=1)
    with pytest.raises(NotPyramidalError, match=r"single\.tif: single-level image"):
        open_slide(single, reader, require_pyramid=True)
    with open_slide(single, reader) as slide:
        assert slide.level_count == 1


def test_subifd_pyramid_opens_with_tiffslide(tmp_path: Path) -> None:
    path = tmp_path / "subifd.tif"
    write_pyramid_tiff(path, tissue_image(1024, 768), levels=3, subifds=True)
    info = inspect_slide(path)
    assert info.level_count == 3 and info.subifd_levels == 2 and info.subifd_pyramid
    with open_slide(path, require_pyramid=True) as slide:
        assert slide.reader_name == "tiffslide" and slide.level_count == 3
    with open_slide(path, "cucim") as flat, open_slide(path, "openslide") as other:
        assert flat.level_count == other.level_count == 1  # neither reads SubIFDs


@pytest.mark.parametrize("reader", READERS)
def test_missing_resolution_only_when_asked(tmp_path: Path, reader: str) -> None:
    path = tmp_path / "nores.tif"
    write_pyramid_tiff(path, tissue_image(512, 512), levels=2, mpp=None)
    with open_slide(path, reader) as slide:
        assert slide.read_region((0, 0), (8, 8)).shape == (8, 8, 3)
        with pytest.raises(
            MissingResolutionError, match=r"nores\.tif: the slide file states no resolution"
        ):
            _ = slide.mpp


def test_unknown_reader_and_bad_arguments(slide_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown slide reader 'pil'"):
        open_slide(slide_file, "pil")
    slide = open_slide(slide_file)
    with pytest.raises(ValueError, match=r"level 4 out of range"):
        slide.read_region((0, 0), (8, 8), 4)
    with pytest.raises(ValueError, match=r"size must be positive"):
        slide.read_region((0, 0), (0, 8))
    with pytest.raises(TypeError, match=r"location must be two integers"):
        slide.read_region((0.5, 0), (8, 8))  # type: ignore[arg-type]
    slide.close()
    slide.close()
    with pytest.raises(SlideError, match=r"closed"):
        slide.read_region((0, 0), (8, 8))


@pytest.mark.parametrize("reader", READERS)
def test_missing_backend_raises_reader_unavailable(
    monkeypatch: pytest.MonkeyPatch, slide_file: Path, reader: str
) -> None:
    import wsi_tumor.slide.cucim_reader as cucim_reader

    monkeypatch.setattr(cucim_reader, "_cuimage_class", None)
    monkeypatch.setitem(sys.modules, "cucim", None)
    monkeypatch.setitem(sys.modules, "openslide", None)
    monkeypatch.setitem(sys.modules, "tiffslide", None)
    monkeypatch.setitem(sys.modules, "torchvision.io", None)
    with pytest.raises(ReaderUnavailableError, match=f"reader '{reader}' is unavailable"):
        open_slide(slide_file, reader)


@pytest.mark.parametrize("reader", READERS)
def test_concurrent_reads_match_sequential(slide_file: Path, reader: str) -> None:
    rng = random.Random(7)
    requests = [
        ((rng.randrange(-100, 2000), rng.randrange(-100, 1500)), (rng.randrange(16, 300),) * 2,
         rng.choice([0, 0, 1, 3]))
        for _ in range(96)
    ]  # fmt: skip
    with open_slide(slide_file, reader) as slide:
        sequential = [slide.read_region(*request) for request in requests]
        with ThreadPoolExecutor(max_workers=8) as pool:
            concurrent = list(pool.map(lambda request: slide.read_region(*request), requests))
    for first, second in zip(sequential, concurrent, strict=True):
        np.testing.assert_array_equal(first, second)


def test_virtual_slide_pyramid_and_fill() -> None:
    image = tissue_image(1000, 700)
    slide = VirtualSlide(image, mpp=MPP)
    assert slide.level_dimensions == ((1000, 700), (500, 350), (250, 175))
    assert slide.level_downsamples == (1.0, 2.0, 4.0)
    assert slide.mpp == (MPP, MPP)
    np.testing.assert_array_equal(slide.read_region((10, 20), (30, 40)), image[20:60, 10:40])
    level1 = image.reshape(350, 2, 500, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(slide.read_region((0, 0), (500, 350), 1), np.rint(level1))
    corner = slide.read_region((-8, 690), (16, 16))
    assert (corner[:, :8] == FILL_VALUE).all() and (corner[10:] == FILL_VALUE).all()
    np.testing.assert_array_equal(corner[:10, 8:], image[690:, :8])
    odd = VirtualSlide(np.zeros((5, 7, 3), np.uint8), levels=3)
    assert odd.level_dimensions == ((7, 5), (4, 3), (2, 2))
    with pytest.raises(MissingResolutionError, match=r"virtual-slide"):
        _ = VirtualSlide(image[:10, :10]).mpp


def test_cucim_gpu_noise_is_filtered(capfd: pytest.CaptureFixture[str]) -> None:
    from wsi_tumor.slide.cucim_reader import filtered_native_output

    with filtered_native_output():
        os.write(1, b"dlopen error libcuda.so.1: cannot open shared object file\n")
        os.write(1, b" cuFile initialization failed\n")
        os.write(1, b"result line\n")
        os.write(2, b"genuine failure: tile 3 is corrupt\n")
    out, err = capfd.readouterr()
    assert out == "result line\n"
    assert err == "genuine failure: tile 3 is corrupt\n"


@pytest.mark.slow
def test_cucim_prints_nothing_after_torch() -> None:
    """torch first makes cuCIM print libcuda/cuFile lines on import and first open."""
    code = (
        "import torch\n"
        "from wsi_tumor.slide import open_slide\n"
        f"open_slide({str(REAL_HE)!r}).read_region((0, 0), (8, 8))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "" and done.stderr == ""
