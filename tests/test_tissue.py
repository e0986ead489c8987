"""Tissue mask: Otsu on HSV saturation on the mask grid, from the pyramid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tifffile

from wsi_tumor.contract import MASK_LEVEL
from wsi_tumor.errors import NotPyramidalError
from wsi_tumor.slide import (
    READERS,
    VirtualSlide,
    mask_shape,
    open_slide,
    save_mask_png,
    tissue_mask,
)
from wsi_tumor.slide.tissue import mask_rgb, tissue_from_rgb
from wsi_tumor.slide.virtual import halve

CELL = 2**MASK_LEVEL
GLASS = (238, 236, 240)
PINK = (222, 140, 190)
PURPLE = (130, 80, 165)
# (row0, row1, col0, col1) in mask cells
RECTANGLES = [(3, 9, 4, 12, PINK), (14, 20, 20, 29, PURPLE), (18, 24, 2, 5, PINK)]


def synthetic(width: int = 2048, height: int = 1536, seed: int = 0) -> npt.NDArray[np.uint8]:
    """Glass with noise and tissue rectangles aligned to the 64 px mask cells."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.float32)
    image[:] = GLASS
    for r0, r1, c0, c1, colour in RECTANGLES:
        image[r0 * CELL : r1 * CELL, c0 * CELL : c1 * CELL] = colour
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def expected_cells(rows: int = 24, cols: int = 32) -> npt.NDArray[np.bool_]:
    expected = np.zeros((rows, cols), bool)
    for r0, r1, c0, c1, _ in RECTANGLES:
        expected[r0:r1, c0:c1] = True
    return expected


def test_mask_shape_rounds_up() -> None:
    slide = VirtualSlide(np.zeros((1500, 2000, 3), np.uint8), levels=1)
    assert mask_shape(slide) == (24, 32)  # ceil(1500 / 64), ceil(2000 / 64)
    assert mask_shape(slide, 4) == (94, 125)


def test_mask_from_exact_level() -> None:
    slide = VirtualSlide(synthetic(), levels=MASK_LEVEL + 1)
    assert slide.level_downsamples[MASK_LEVEL] == CELL
    np.testing.assert_array_equal(tissue_mask(slide), expected_cells())


def test_mask_from_nearest_finer_level_matches_exact_level() -> None:
    image = synthetic()
    coarse = VirtualSlide(image, levels=4)  # finest below 64 is level 3 (downsample 8)
    exact = VirtualSlide(image, levels=MASK_LEVEL + 1)
    rgb_resampled, rgb_exact = mask_rgb(coarse), mask_rgb(exact)
    # block mean of 8x8 at level 3 vs three more 2x means: rounding differs by at most 1
    assert np.abs(rgb_resampled.astype(int) - rgb_exact).max() <= 1
    np.testing.assert_array_equal(tissue_mask(coarse), expected_cells())


@pytest.mark.parametrize("levels", [MASK_LEVEL + 1, 4])
def test_mask_never_reads_level_0(levels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mask comes from the mask level or the nearest finer one, never from level 0."""
    slide = VirtualSlide(synthetic(), levels=levels)
    read_levels: list[int] = []
    original = slide.read_region

    def spy(location: tuple[int, int], size: tuple[int, int], level: int = 0) -> Any:
        read_levels.append(level)
        return original(location, size, level)

    monkeypatch.setattr(slide, "read_region", spy)
    np.testing.assert_array_equal(tissue_mask(slide), expected_cells())
    assert read_levels and min(read_levels) == min(levels - 1, MASK_LEVEL)


def test_mask_on_odd_sized_slide() -> None:
    image = synthetic(2000, 1500)
    for levels in (3, MASK_LEVEL + 1):
        mask = tissue_mask(VirtualSlide(image, levels=levels))
        assert mask.shape == (24, 32)
        np.testing.assert_array_equal(mask, expected_cells()[:24, :32])


def test_floor_rounded_level_is_used(tmp_path: Path) -> None:
    """A file pyramid whose level 6 is floor-sized (2000 / 64 -> 31) is edge-padded to 32."""
    image = synthetic(2000, 1500)
    path = tmp_path / "floor.tif"
    with tifffile.TiffWriter(path) as tif:
        opts: dict[str, Any] = {
            "tile": (256, 256),
            "compression": "jpeg",
            "photometric": "rgb",
            "metadata": None,
        }
        tif.write(image, **opts)
        tif.write(image[::64, ::64][:23, :31].copy(), subfiletype=1, **opts)
    with open_slide(path, "openslide") as slide:
        assert slide.level_dimensions[1] == (31, 23)
        assert mask_rgb(slide).shape == (24, 32, 3)


def test_blank_and_full_images() -> None:
    rng = np.random.default_rng(1)
    glass = np.clip(rng.normal(GLASS, 4, (512, 512, 3)), 0, 255).astype(np.uint8)
    assert not tissue_from_rgb(glass).any()  # Otsu on noise alone would mark half
    assert not tissue_mask(VirtualSlide(glass), 3).any()
    stained = np.clip(rng.normal(PINK, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
    assert tissue_from_rgb(stained).all()
    assert not tissue_from_rgb(np.full((8, 8, 3), 255, np.uint8)).any()


def test_black_ink_is_not_tissue() -> None:
    image = synthetic()
    image[0:CELL, 0 : 3 * CELL] = (20, 20, 60)  # saturated but black: NCRF's RGB_min
    mask = tissue_mask(VirtualSlide(image, levels=MASK_LEVEL + 1))
    assert not mask[0, :3].any()
    np.testing.assert_array_equal(mask, expected_cells())


def test_single_level_over_budget_raises() -> None:
    slide = VirtualSlide(synthetic(1024, 768), levels=1, name="flat.tif")
    with pytest.raises(NotPyramidalError, match=r"flat.tif: .* exceeds the tissue-mask budget"):
        tissue_mask(slide, max_pixels=512 * 512)
    assert tissue_mask(slide).shape == (12, 16)  # within the default budget


@pytest.mark.parametrize("reader", READERS)
def test_mask_of_tiff_slide(tmp_path: Path, reader: str) -> None:
    image = synthetic()
    pyramid = [image]
    for _ in range(3):
        pyramid.append(halve(pyramid[-1]))
    path = tmp_path / "rects.tif"
    opts: dict[str, Any] = {
        "tile": (256, 256),
        "compression": "jpeg",
        "photometric": "rgb",
        "metadata": None,
    }
    with tifffile.TiffWriter(path) as tif:
        tif.write(pyramid[0], **opts)
        for level in pyramid[1:]:
            tif.write(level, subfiletype=1, **opts)
    with open_slide(path, reader) as slide:
        mask = tissue_mask(slide)
    np.testing.assert_array_equal(mask, expected_cells())
    out = save_mask_png(mask, tmp_path / "masks" / "rects.png")
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(out)) > 0, mask)
