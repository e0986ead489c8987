"""Tissue mask: Otsu on HSV saturation on the mask grid, from the pyramid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tifffile

from wsi_tumor.contract import MASK_LEVEL
from wsi_tumor.errors import ConfigError, NotBrightfieldError, NotPyramidalError
from wsi_tumor.slide import (
    READERS,
    VirtualSlide,
    mask_shape,
    open_slide,
    save_mask_png,
    tissue_mask,
)
from wsi_tumor.slide.image import halve
from wsi_tumor.slide.tissue import check_brightfield, ink_cells, mask_rgb, tissue_from_rgb

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


def test_dark_cells_kept_by_monai_dropped_by_ncrf_and_blue_ink_by_the_ink_option() -> None:
    image = synthetic()
    image[0:CELL, 0 : 3 * CELL] = (20, 20, 60)  # saturated and dark: NCRF's RGB_min drops it
    image[2 * CELL : 3 * CELL, 20 * CELL : 23 * CELL] = (25, 45, 110)  # blue marker, hue 0.63
    slide = VirtualSlide(image, levels=MASK_LEVEL + 1)
    expected = expected_cells()
    monai = tissue_mask(slide)
    assert monai[0, :3].all() and monai[2, 20:23].all(), "MONAI's rule keeps dark stained cells"
    ncrf = tissue_mask(slide, rule="ncrf")
    assert not ncrf[0, :3].any() and not ncrf[2, 20:23].any()  # both have a channel <= 50
    no_ink = tissue_mask(slide, exclude_ink=True)
    assert not no_ink[2, 20:23].any()
    for mask in (monai, ncrf, no_ink):  # the stained rectangles survive every rule
        assert mask[expected].all()
    with pytest.raises(ConfigError, match="tissue-rule"):
        tissue_from_rgb(image[:64, :64], rule="otsu")


def test_ink_option_keeps_dense_haematoxylin_and_drops_ink_by_colour() -> None:
    """Dense dark tissue is coloured; ink is a foreign hue, oversaturated, or colourless."""
    glass, cells = (238, 236, 240), np.zeros((8, 8, 3), np.uint8)
    cells[:] = glass
    tissue = {(2, 2): (92, 44, 117), (2, 3): (60, 28, 90), (2, 4): (57, 51, 136),
              (3, 2): (200, 120, 170), (3, 3): (150, 70, 140)}  # fmt: skip
    ink = {(5, 2): (40, 120, 60), (5, 3): (30, 60, 150), (5, 4): (20, 20, 24),
           (6, 2): (230, 20, 40), (6, 3): (100, 100, 100)}  # fmt: skip
    for (row, col), colour in {**tissue, **ink}.items():
        cells[row, col] = colour
    found = ink_cells(cells)
    assert not any(found[rc] for rc in tissue) and all(found[rc] for rc in ink)
    assert not found[0, 0], "glass is not ink (MONAI's rule already leaves it out)"
    kept = tissue_from_rgb(cells, exclude_ink=True)
    assert all(kept[rc] for rc in tissue) and not any(kept[rc] for rc in ink)


REAL_TISSUE = Path(__file__).parent / "data" / "real" / "tissue"
# Share of tissue-mask cells allowed inside each hand-marked box kind, per rule; tissue
# boxes must keep at least the given share (one image's pale tissue splits under Otsu).
PEN_LIMIT, EDGE_LIMIT, TISSUE_FLOOR = 0.3, 0.15, 0.8
PALE_TISSUE_FLOOR = {"histolab-tcga-green-pen.png": 0.4}


def _real_image(name: str) -> tuple[npt.NDArray[np.uint8], dict[str, list[list[int]]]]:
    import json

    from PIL import Image

    image = np.asarray(Image.open(REAL_TISSUE / name).convert("RGB"))
    return image, json.loads((REAL_TISSUE / name).with_suffix(".json").read_text())


def _share(mask: npt.NDArray[np.bool_], box: list[int]) -> float:
    x0, y0, x1, y1 = box
    return float(mask[y0:y1, x0:x1].mean())


@pytest.mark.parametrize("name", sorted(p.name for p in REAL_TISSUE.glob("*.png")))
def test_real_images_with_pen_and_borders_against_hand_marked_boxes(name: str) -> None:
    """Each pixel of these real slide thumbnails stands for one mask cell."""
    image, boxes = _real_image(name)
    monai = tissue_from_rgb(image)
    no_ink = tissue_from_rgb(image, exclude_ink=True)
    for box in boxes.get("glass", []) + boxes.get("border", []):
        assert _share(monai, box) <= EDGE_LIMIT, f"{name}: glass/border {box} is tissue"
        assert _share(no_ink, box) <= EDGE_LIMIT, f"{name}: glass/border {box} is tissue"
    for box in boxes.get("pen", []):
        assert _share(no_ink, box) <= PEN_LIMIT, f"{name}: ink {box} kept with exclude_ink"
    floor = PALE_TISSUE_FLOOR.get(name, TISSUE_FLOOR)
    for box in boxes.get("tissue", []):
        assert _share(no_ink, box) >= floor, f"{name}: tissue {box} lost with exclude_ink"


def test_monai_rule_keeps_ink_which_the_option_removes() -> None:
    image, boxes = _real_image("histoqc-pen-green.png")
    monai, no_ink = tissue_from_rgb(image), tissue_from_rgb(image, exclude_ink=True)
    assert all(_share(monai, box) > 0.9 for box in boxes["pen"])  # MONAI keeps marker
    assert all(_share(no_ink, box) < 0.05 for box in boxes["pen"])
    assert all(_share(monai, box) > 0.85 for box in boxes["tissue"])


def test_fluorescence_is_not_brightfield() -> None:
    path = REAL_TISSUE.parent / "hamamatsu" / "test3-DAPI-2-387.ndpi"
    with open_slide(path) as slide, pytest.raises(NotBrightfieldError, match="fluorescence"):
        tissue_mask(slide)
    image, _ = _real_image("histoqc-pen-black.png")  # mostly glass: brightfield
    check_brightfield(image, "pen-black")


@pytest.mark.slow
def test_default_mask_equals_monais_masked_patch_dataset_on_dark_purple_tissue(
    tmp_path: Path,
) -> None:
    """MONAI's own MaskedPatchWSIDataset(mask_level=6) through cuCIM is the oracle."""
    from monai.data import MaskedPatchWSIDataset

    rng = np.random.default_rng(7)
    image = synthetic(2560, 2048, seed=3)
    dark = [
        (2, 6, 2, 9, (92, 44, 117)),
        (26, 31, 30, 38, (45, 18, 70)),
        (8, 12, 34, 39, (60, 28, 90)),
    ]
    for r0, r1, c0, c1, colour in dark:  # dense haematoxylin, some below NCRF's RGB_min
        block = np.asarray(colour, np.float32) + rng.normal(
            0, 6, ((r1 - r0) * CELL, (c1 - c0) * CELL, 3)
        )
        image[r0 * CELL : r1 * CELL, c0 * CELL : c1 * CELL] = np.clip(block, 0, 255).astype(
            np.uint8
        )
    pyramid = [image]
    while len(pyramid) <= MASK_LEVEL:
        pyramid.append(halve(pyramid[-1]))
    path = tmp_path / "dark_purple.tif"
    opts: dict[str, Any] = {"tile": (256, 256), "compression": "jpeg", "photometric": "rgb"}
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            pyramid[0], resolution=(1e4 / 0.243, 1e4 / 0.243), resolutionunit="CENTIMETER", **opts
        )
        for level in pyramid[1:]:
            tif.write(level, subfiletype=1, **opts)
    dataset = MaskedPatchWSIDataset(
        [{"image": str(path)}], patch_size=224, mask_level=MASK_LEVEL, reader="cuCIM"
    )
    monai_cells = {tuple(int(v) for v in s["mask_location"]) for s in dataset.data}
    with open_slide(path) as slide:
        ours = tissue_mask(slide)
        ncrf = tissue_mask(slide, rule="ncrf")
    assert {tuple(int(v) for v in rc) for rc in np.argwhere(ours)} == monai_cells
    dropped = ours & ~ncrf
    assert dropped.sum() >= 20, "the slide must have cells NCRF's RGB_min drops"
    r0, r1, c0, c1, _ = dark[1]
    assert dropped[r0:r1, c0:c1].mean() > 0.9


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
