"""The synthetic dataset: layout, readers, masks, lesion appearance, coords, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu

from wsi_tumor.annotations.formats import read_annotations, read_asap_xml
from wsi_tumor.annotations.polygons import contains, rasterize
from wsi_tumor.data import layout
from wsi_tumor.data.cli import main
from wsi_tumor.data.synthetic import SlideSpec, SynthConfig, generate, write_slide, write_slides
from wsi_tumor.data.tiff_writer import downsample2, pyramid_dimensions
from wsi_tumor.errors import ConfigError

SIZE = 2048
SEED = 11


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    # train 2 = tumor_001 + normal_001, valid 1 = tumor_002, test 2 = test_001 (tumour) + 002
    generate(
        SynthConfig(
            out=root,
            train=2,
            valid=1,
            test=2,
            size=SIZE,
            seed=SEED,
            coords=60,
            valid_coords=20,
            quiet=True,
        )
    )
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_and_lists(dataset: Path) -> None:
    images = sorted(p.name for p in (dataset / layout.IMAGES_DIR).iterdir())
    assert images == [
        "normal_001.tif",
        "test_001.tif",
        "test_002.tif",
        "tumor_001.tif",
        "tumor_002.tif",
    ]
    for slide in ("tumor_001", "tumor_002", "test_001"):
        assert layout.xml_path(dataset, slide).is_file()
        assert layout.json_path(dataset, slide).is_file()
        assert layout.mask_path(dataset, slide).is_file()
    for slide in ("normal_001", "test_002"):
        assert not layout.mask_path(dataset, slide).exists()
    testing = layout.coords_path(dataset, layout.TESTING_CSV).read_text().splitlines()
    assert testing == ["slide,label", "test_001,tumor", "test_002,normal"]
    slides = layout.coords_path(dataset, layout.SLIDES_CSV).read_text().splitlines()
    assert slides[1:] == [
        "tumor_001,tumor,train",
        "normal_001,normal,train",
        "tumor_002,tumor,valid",
        "test_001,tumor,test",
        "test_002,normal,test",
    ]
    assert not list(dataset.rglob(".*.tmp"))


def test_three_readers_agree_on_levels_and_mpp(dataset: Path) -> None:
    import cucim
    import openslide
    import tiffslide

    path = layout.image_path(dataset, "tumor_001")
    expected = tuple(pyramid_dimensions(SIZE, SIZE, 512, 7))
    assert expected[-1] == (32, 32)  # down to level 6 (the tissue-mask level)
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_dimensions == expected
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.243, abs=1e-6)
        region_os = np.asarray(slide.read_region((700, 900), 0, (300, 200)))[..., :3]
    ts = tiffslide.TiffSlide(str(path))
    assert ts.level_dimensions == expected
    assert float(ts.properties["tiffslide.mpp-x"]) == pytest.approx(0.243, abs=1e-6)
    region_ts = np.asarray(ts.read_region((700, 900), 0, (300, 200)))[..., :3]
    ts.close()
    image = cucim.CuImage(str(path))
    assert tuple(tuple(d) for d in image.resolutions["level_dimensions"]) == expected
    assert image.spacing()[:2] == pytest.approx([0.243, 0.243], abs=1e-6)
    region_cu = np.asarray(image.read_region((700, 900), (300, 200), 0))[..., :3]
    np.testing.assert_array_equal(region_os, region_ts)
    np.testing.assert_array_equal(region_os, region_cu)
    mask_path = layout.mask_path(dataset, "tumor_001")
    with openslide.OpenSlide(str(mask_path)) as mask:
        assert mask.level_dimensions[5] == (SIZE // 32, SIZE // 32)
    assert tuple(cucim.CuImage(str(mask_path)).resolutions["level_dimensions"][5]) == (64, 64)


def test_mask_level5_equals_rasterised_xml(dataset: Path) -> None:
    """Mask levels are rasterised from the polygons: level 5 matches exactly, no boundary slack."""
    for slide in ("tumor_001", "tumor_002", "test_001"):
        polygons = read_asap_xml(layout.xml_path(dataset, slide))
        assert read_annotations(layout.json_path(dataset, slide)) == sorted(
            polygons, key=lambda p: p.is_exclusion
        )
        with tifffile.TiffFile(layout.mask_path(dataset, slide)) as tif:
            level5 = next(p for p in tif.pages if p.shape == (SIZE // 32, SIZE // 32)).asarray()
            level0 = tif.pages[0].asarray()
        expected = rasterize(polygons, (SIZE // 32, SIZE // 32), 32.0) * 255
        np.testing.assert_array_equal(level5, expected)
        assert set(np.unique(level0)) == {0, 255}
        np.testing.assert_array_equal(level0, rasterize(polygons, (SIZE, SIZE), 1.0) * 255)


def test_lesions_are_darker_and_denser_and_tissue_separates(dataset: Path) -> None:
    with tifffile.TiffFile(layout.image_path(dataset, "tumor_001")) as tif:
        rgb = tif.pages[0].asarray()
        level6 = tif.pages[6].asarray()
    lesion = tifffile.imread(layout.mask_path(dataset, "tumor_001")) > 0
    grey = rgb.astype(np.float32).mean(axis=2)
    tissue = rgb2hsv(rgb[::8, ::8])[..., 1] > 0.15
    normal_tissue = tissue & ~lesion[::8, ::8]
    tumour_grey, normal_grey = grey[lesion].mean(), grey[::8, ::8][normal_tissue].mean()
    assert tumour_grey < normal_grey - 25  # darker
    dark_tumour = (grey[lesion] < 140).mean()
    dark_normal = (grey[::8, ::8][normal_tissue] < 140).mean()
    assert dark_tumour > 2 * dark_normal  # denser nuclei
    # Otsu on HSV saturation at level 6 splits tissue from glass with a wide margin
    saturation = rgb2hsv(level6)[..., 1]
    threshold = threshold_otsu(saturation)
    low, high = saturation[saturation < threshold], saturation[saturation >= threshold]
    assert low.mean() < 0.08 < 0.2 < high.mean()
    assert 0.3 < (saturation >= threshold).mean() < 0.9


def test_coords_inside_slides_and_labels(dataset: Path) -> None:
    counts = {}
    for name in (layout.TUMOR_TRAIN, layout.NORMAL_TRAIN, layout.TUMOR_VALID, layout.NORMAL_VALID):
        lines = layout.coords_path(dataset, name).read_text().splitlines()
        counts[name] = len(lines)
        for line in lines:
            slide, x, y = line.split(",")
            assert layout.image_path(dataset, slide).is_file()
            assert 384 <= int(x) < SIZE - 384 and 384 <= int(y) < SIZE - 384
            polygons = (
                read_asap_xml(layout.xml_path(dataset, slide))
                if slide.startswith(layout.TUMOR_PREFIX)
                else []
            )
            inside = bool(contains(polygons, [(int(x), int(y))])[0]) if polygons else False
            assert inside == name.startswith("tumor"), line
            split = "train" if "train" in name else "valid"
            assert slide in {"train": {"tumor_001", "normal_001"}, "valid": {"tumor_002"}}[split]
    assert counts == {
        layout.TUMOR_TRAIN: 60,
        layout.NORMAL_TRAIN: 60,
        layout.TUMOR_VALID: 20,
        layout.NORMAL_VALID: 20,
    }


def test_deterministic_for_a_seed(dataset: Path, tmp_path: Path) -> None:
    for sub in (layout.IMAGES_DIR, layout.ANNOTATIONS_DIR, layout.JSONS_DIR, layout.MASKS_DIR):
        (tmp_path / sub).mkdir()
    write_slide(tmp_path, SlideSpec("test_001", "tumor", "test"), SIZE, SEED)
    for path_of in (layout.image_path, layout.mask_path, layout.xml_path, layout.json_path):
        assert _sha(path_of(tmp_path, "test_001")) == _sha(path_of(dataset, "test_001"))
    write_slide(tmp_path, SlideSpec("test_001", "tumor", "test"), SIZE, SEED + 1)
    assert _sha(layout.image_path(tmp_path, "test_001")) != _sha(
        layout.image_path(dataset, "test_001")
    )


def _square_unless_negative(n: int) -> int:
    if n < 0:
        raise ConfigError(f"slide {n}: negative")
    return n * n


def test_write_slides_keeps_the_order_and_raises_a_workers_error() -> None:
    """Slides are written by a process pool (``test_deterministic_for_a_seed`` checks that a
    pooled slide equals one written alone); results come back in the specs' order, and a
    worker's typed error reaches the caller as itself."""
    assert write_slides(_square_unless_negative, [3, 1, 2, 5], quiet=True) == [9, 1, 4, 25]
    with pytest.raises(ConfigError, match="slide -1: negative"):
        write_slides(_square_unless_negative, [1, -1, 2], quiet=True)


def test_downsample2_and_dimensions() -> None:
    strip = np.array([[0, 2, 255], [1, 3, 255], [8, 8, 9]], np.uint8)
    np.testing.assert_array_equal(downsample2(strip), [[2, 255], [8, 9]])
    assert pyramid_dimensions(3000, 2000, 512, 1) == [
        (3000, 2000),
        (1500, 1000),
        (750, 500),
        (375, 250),
    ]


def test_cli_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "out"), "--size", "1000", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["wsi-synth: error: --size must be at least 2048, got 1000"]
