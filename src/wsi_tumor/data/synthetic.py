"""The synthetic CAMELYON16-style dataset behind ``wsi-synth`` (layout: :mod:`layout`).

Each slide is a pure function of (seed, slide name, size, label): its own random stream
draws the tissue sections and lesions (:mod:`geometry`), the stain and three periodic
textures (:mod:`texture`: normal tissue, tumour, glass), and level 0 is painted strip by
strip by tiling those textures under the rasterised tissue and lesion polygons, so the
image, the XML/JSON annotations and the mask agree pixel for pixel.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from wsi_tumor.annotations.formats import write_asap_xml, write_ncrf_json
from wsi_tumor.annotations.polygons import fill_polygons, rasterize_region
from wsi_tumor.data import layout
from wsi_tumor.data.coords import PlannedSlide, sample_slide_coords, write_coords
from wsi_tumor.data.geometry import SlideGeometry, plan_geometry
from wsi_tumor.data.texture import TextureKind, random_stain, render_texture
from wsi_tumor.data.tiff_writer import PyramidSpec, write_pyramid
from wsi_tumor.errors import ConfigError
from wsi_tumor.fileio import write_text

log = logging.getLogger(__name__)

MIN_SLIDE_SIZE = 2048
SLIDE_MIN_LEVELS = 7
"""Slides keep halving at least down to level 6, the tissue-mask level."""


@dataclass(frozen=True)
class SynthConfig:
    """Arguments of one ``wsi-synth`` run.

    Attributes:
        out: Output root.
        train: Training slides (tumour and normal together).
        valid: Validation slides (tumour and normal together).
        test: Test slides.
        size: Side of every (square) slide in level-0 pixels.
        seed: Random seed; the same arguments give the same files.
        tumor_fraction: Share of tumour slides in each split (at least one when > 0).
        coords: Patch centres per training list.
        valid_coords: Patch centres per validation list.
        quiet: No progress bars.
    """

    out: Path
    train: int = 2
    valid: int = 2
    test: int = 2
    size: int = 8192
    seed: int = 0
    tumor_fraction: float = 0.5
    coords: int = 400
    valid_coords: int = 100
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.size < MIN_SLIDE_SIZE:
            raise ConfigError(f"--size must be at least {MIN_SLIDE_SIZE}, got {self.size}")
        if min(self.train, self.valid, self.test, self.coords, self.valid_coords) < 0:
            raise ConfigError("slide and coordinate counts must not be negative")
        if not 0.0 <= self.tumor_fraction <= 1.0:
            raise ConfigError(f"--tumor-fraction must be in [0, 1], got {self.tumor_fraction}")


@dataclass(frozen=True)
class SlideSpec:
    """One slide to generate: name, label (tumor/normal) and split."""

    name: str
    label: layout.Label
    split: layout.Split


def is_tumor_slide(number: int, fraction: float) -> bool:
    """Whether slide ``number`` (1-based) of a split is a tumour slide.

    Spreads ``ceil(n * fraction)`` tumour slides evenly over n slides, the first one
    tumour: with 0.5, odd numbers are tumour and even ones normal.
    """
    return math.ceil(number * fraction) > math.ceil((number - 1) * fraction)


def _label(number: int, fraction: float) -> layout.Label:
    return "tumor" if is_tumor_slide(number, fraction) else "normal"


def plan_slides(config: SynthConfig) -> list[SlideSpec]:
    """Names, labels and splits of every slide, in generation order."""
    specs: list[SlideSpec] = []
    counters = {layout.TUMOR_LABEL: 0, layout.NORMAL_LABEL: 0}
    splits: tuple[tuple[layout.Split, int], ...] = (
        ("train", config.train),
        ("valid", config.valid),
    )
    for split, count in splits:
        for number in range(1, count + 1):
            label = _label(number, config.tumor_fraction)
            counters[label] += 1
            prefix = layout.TUMOR_PREFIX if label == layout.TUMOR_LABEL else layout.NORMAL_PREFIX
            specs.append(SlideSpec(layout.slide_name(prefix, counters[label]), label, split))
    for number in range(1, config.test + 1):
        label = _label(number, config.tumor_fraction)
        specs.append(SlideSpec(layout.slide_name(layout.TEST_PREFIX, number), label, "test"))
    return specs


def slide_rng(seed: int, name: str) -> np.random.Generator:
    """The random stream of one slide: depends on the seed and the slide's name only."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(name.encode())))


class _Painter:
    """Paints level-0 strips of one slide from its textures and polygons."""

    def __init__(self, geometry: SlideGeometry, rng: np.random.Generator, tumour: bool):
        size = geometry.size
        side = 2048 if size >= 8192 else 1024
        stain = random_stain(rng)
        self.geometry = geometry
        kinds: tuple[TextureKind, ...] = (
            ("glass", "normal", "tumor")
            if tumour
            else (
                "glass",
                "normal",
            )
        )
        self.textures = {kind: render_texture(kind, side, stain, rng) for kind in kinds}
        self.offsets = {kind: rng.integers(0, side, 2) for kind in self.textures}
        self.side = side
        self.cols = np.arange(size)
        lesion_vertices = [p.vertices for p in geometry.annotations if p.is_tumor]
        self.lesion_rows = (
            (
                min(v[:, 1].min() for v in lesion_vertices),
                max(v[:, 1].max() for v in lesion_vertices),
            )
            if lesion_vertices
            else None
        )

    def _texture(self, kind: TextureKind, row0: int, rows: int) -> npt.NDArray[np.uint8]:
        ox, oy = self.offsets[kind]
        texture = self.textures[kind]
        ri = (np.arange(row0, row0 + rows) + oy) % self.side
        ci = (self.cols + ox) % self.side
        return texture[ri][:, ci]

    def __call__(self, row0: int, rows: int) -> npt.NDArray[np.uint8]:
        size = self.geometry.size
        out = self._texture("glass", row0, rows)
        tissue = fill_polygons(self.geometry.tissue, (0, row0), (rows, size), 1.0)
        np.copyto(out, self._texture("normal", row0, rows), where=tissue[..., None])
        if self.lesion_rows is not None and (
            row0 <= self.lesion_rows[1] and row0 + rows >= self.lesion_rows[0]
        ):
            lesion = rasterize_region(self.geometry.annotations, (0, row0), (rows, size), 1.0)
            if lesion.any():
                np.copyto(out, self._texture("tumor", row0, rows), where=lesion[..., None] > 0)
        return out


def _mask_renderer(geometry: PlannedSlide) -> Callable[[int, int, int], npt.NDArray[np.uint8]]:
    """Render ``(level, row0, rows)`` strips of the slide's tumour mask (annotations rasterised)."""

    def render_level(level: int, row0: int, rows: int) -> npt.NDArray[np.uint8]:
        width = math.ceil(geometry.width / 2**level)
        mask = rasterize_region(geometry.annotations, (0, row0), (rows, width), float(2**level))
        return mask * np.uint8(layout.MASK_TUMOR_VALUE)

    return render_level


def write_ground_truth(root: Path, name: str, slide: PlannedSlide) -> None:
    """A tumour slide's annotations (ASAP XML, NCRF JSON) and its pyramidal tumour mask."""
    write_asap_xml(layout.xml_path(root, name), slide.annotations)
    write_ncrf_json(layout.json_path(root, name), slide.annotations)
    render_level = _mask_renderer(slide)
    write_pyramid(
        layout.mask_path(root, name),
        PyramidSpec(slide.width, slide.height, 1, layout.MPP, min_levels=layout.MASK_MIN_LEVEL + 1),
        lambda row0, rows: render_level(0, row0, rows),
        render_level=render_level,
    )


def write_slide(
    root: Path, spec: SlideSpec, size: int, seed: int, quiet: bool = True
) -> SlideGeometry:
    """Generate one slide: image, and for a tumour slide its XML, JSON and mask.

    Args:
        root: Dataset root (subdirectories must exist).
        spec: Which slide.
        size: Side in level-0 pixels.
        seed: Dataset seed.
        quiet: Hide the progress bar.

    Returns:
        The slide's geometry (tissue and annotations).
    """
    rng = slide_rng(seed, spec.name)
    tumour = spec.label == layout.TUMOR_LABEL
    try:
        geometry = plan_geometry(rng, size, tumour, layout.MPP)
    except ValueError as exc:
        raise ConfigError(f"{spec.name}: {exc}; use a larger --size") from exc
    painter = _Painter(geometry, rng, tumour)
    with tqdm(total=size, desc=spec.name, unit="row", disable=quiet, leave=False) as bar:
        write_pyramid(
            layout.image_path(root, spec.name),
            PyramidSpec(size, size, 3, layout.MPP, min_levels=SLIDE_MIN_LEVELS),
            painter,
            progress=bar.update,
        )
    if tumour:
        write_ground_truth(root, spec.name, geometry)
    log.info(
        "%s (%s, %s): %d lesion(s) %s",
        spec.name,
        spec.label,
        spec.split,
        len(geometry.lesions),
        ", ".join(f"{info.major_um:.0f} um" for info in geometry.lesions),
    )
    return geometry


class ListedSlide(Protocol):
    """What the dataset's lists need of a slide's spec."""

    @property
    def name(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def split(self) -> str: ...


class ListSizes(Protocol):
    """The run arguments the lists depend on (:class:`SynthConfig` and the hard preset's)."""

    @property
    def seed(self) -> int: ...
    @property
    def coords(self) -> int: ...
    @property
    def valid_coords(self) -> int: ...


def make_dataset_dirs(root: Path) -> None:
    """Create the dataset's folders (:mod:`wsi_tumor.data.layout`) under ``root``."""
    for sub in (
        layout.IMAGES_DIR,
        layout.ANNOTATIONS_DIR,
        layout.JSONS_DIR,
        layout.MASKS_DIR,
        layout.COORDS_DIR,
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)


SpecT = TypeVar("SpecT")
ResultT = TypeVar("ResultT")


def write_slides(
    write: Callable[[SpecT], ResultT], specs: Sequence[SpecT], quiet: bool
) -> list[ResultT]:
    """``write`` over ``specs``, one process per CPU core (each slide is a pure function of
    its spec and files of its own), results in order, with a bar over the slides written.

    ``write`` must pickle (a module-level function or a ``partial`` of one) and should hide its
    own per-row bar: several slides are written at once.
    """
    workers = min(len(specs), os.cpu_count() or 1)
    bar = partial(tqdm, total=len(specs), desc="slides", unit="slide", disable=quiet)
    if workers <= 1:
        return [write(spec) for spec in bar(specs)]
    with ProcessPoolExecutor(workers) as pool:
        return list(bar(pool.map(write, specs)))


def write_lists(
    root: Path,
    specs: Sequence[ListedSlide],
    planned: Mapping[str, PlannedSlide],
    sizes: ListSizes,
) -> None:
    """Write the training and validation patch-centre lists and the slide lists.

    Args:
        root: Dataset root.
        specs: Every slide, in order.
        planned: Each slide's plan, by name (where its tissue and lesions are).
        sizes: Seed and number of centres per training and validation list.
    """
    for split, count in (("train", sizes.coords), ("valid", sizes.valid_coords)):
        chosen = [s for s in specs if s.split == split]
        tumour_lines, normal_lines = sample_slide_coords(
            [(s.name, s.label, planned[s.name]) for s in chosen],
            count,
            np.random.default_rng(np.random.SeedSequence(sizes.seed, spawn_key=(7, len(split)))),
        )
        if chosen and not (tumour_lines and normal_lines):
            log.warning("%s split: a coordinate list is empty", split)
        write_coords(layout.coords_path(root, f"tumor_{split}.txt"), tumour_lines)
        write_coords(layout.coords_path(root, f"normal_{split}.txt"), normal_lines)
    tests = [s for s in specs if s.split == "test"]
    write_text(
        layout.coords_path(root, layout.TESTING_CSV),
        "slide,label\n" + "".join(f"{s.name},{s.label}\n" for s in tests),
    )
    write_text(
        layout.coords_path(root, layout.SLIDES_CSV),
        "slide,label,split\n" + "".join(f"{s.name},{s.label},{s.split}\n" for s in specs),
    )


def generate(config: SynthConfig) -> list[SlideSpec]:
    """Write the whole dataset under ``config.out`` (see :mod:`wsi_tumor.data.layout`).

    Args:
        config: Run arguments.

    Returns:
        The slides written, in order.
    """
    root = Path(config.out)
    make_dataset_dirs(root)
    specs = plan_slides(config)
    written = write_slides(
        partial(write_slide, root, size=config.size, seed=config.seed), specs, config.quiet
    )
    geometries = {spec.name: geometry for spec, geometry in zip(specs, written, strict=True)}
    write_lists(root, specs, geometries, config)
    metadata = {
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(config).items()
            if k not in ("out", "quiet")
        },
        "mpp": layout.MPP,
        "slides": [
            {
                **asdict(s),
                "lesions": [asdict(info) for info in geometries[s.name].lesions],
            }
            for s in specs
        ],
    }
    write_text(root / layout.METADATA_JSON, json.dumps(metadata, indent=1) + "\n")
    return specs
