"""Grid labels for training: patch-centre lists + tumour polygons -> label CSV rows.

Input centre lists are NCRF-style text files, one ``slide_name,x,y`` per line (level-0 pixels,
x = column). Output rows are ``slide_name,x,y,l0,...,l8`` without a header, the layout the
MONAI bundle's ``train.json`` reads (``CSVDataset(col_groups={"image": 0, "location": [2, 1],
"label": [3, 6, 9, 4, 7, 10, 5, 8, 11]}, header=None)``); see :mod:`wsi_tumor.training.grid`
for the label order.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from wsi_tumor.errors import LabelError, WsiTumorError
from wsi_tumor.fileio import atomic_path
from wsi_tumor.slide import SLIDE_SUFFIXES
from wsi_tumor.training.grid import NUM_CELLS, cell_centres_csv_order

log = logging.getLogger(__name__)

ANNOTATION_SUFFIXES: Final = (".json", ".xml")

SlideSizeFn = Callable[[Path], tuple[int, int]]
SlideScaleFn = Callable[[Path], float]
"""A slide file -> its level-0 pixels per training-resolution pixel (1.0 at 0.243 um/px)."""


@dataclass(frozen=True)
class Centre:
    """One patch centre read from a coords file, with where it came from."""

    slide: str
    x: int
    y: int
    source: Path
    line: int

    @property
    def where(self) -> str:
        """``file:line`` for error messages."""
        return f"{self.source}:{self.line}"


@dataclass(frozen=True)
class LabelRow:
    """One row of a label CSV: a region centre and its nine labels in CSV order."""

    slide: str
    x: int
    y: int
    labels: tuple[int, ...]
    source: Path | None = None
    line: int = 0

    @property
    def where(self) -> str:
        """``file:line`` for error messages."""
        return f"{self.source}:{self.line}"

    def as_csv(self) -> list[str]:
        """Fields of the CSV line."""
        return [self.slide, str(self.x), str(self.y), *(str(v) for v in self.labels)]


def _parse_int(text: str, what: str, where: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise LabelError(f"{where}: {what} {text.strip()!r} is not a number") from None
    if not value.is_integer():
        raise LabelError(f"{where}: {what} {text.strip()!r} is not a whole pixel")
    return int(value)


def _lines(path: Path) -> Iterable[tuple[int, list[str]]]:
    if not path.is_file():
        raise LabelError(f"{path}: file does not exist")
    with path.open(newline="") as handle:
        for lineno, fields in enumerate(csv.reader(handle), start=1):
            if not fields or all(not f.strip() for f in fields):
                continue
            yield lineno, [f.strip() for f in fields]


def read_coords(path: Path | str) -> list[Centre]:
    """Read an NCRF-style coords file (``slide_name,x,y`` per line, no header).

    Raises:
        LabelError: naming file and line for a missing file or a malformed line.
    """
    path = Path(path)
    centres = []
    for lineno, fields in _lines(path):
        where = f"{path}:{lineno}"
        if len(fields) != 3 or not fields[0]:
            raise LabelError(f"{where}: expected 'slide_name,x,y', found {','.join(fields)!r}")
        x = _parse_int(fields[1], "x", where)
        y = _parse_int(fields[2], "y", where)
        centres.append(Centre(fields[0], x, y, path, lineno))
    return centres


def read_label_csv(path: Path | str) -> list[LabelRow]:
    """Read a label CSV (``slide_name,x,y,l0..l8``, no header).

    Raises:
        LabelError: naming file and line for a missing file, a wrong field count, a
            non-integer coordinate or a label other than 0 or 1.
    """
    path = Path(path)
    rows = []
    for lineno, fields in _lines(path):
        where = f"{path}:{lineno}"
        if len(fields) != 3 + NUM_CELLS or not fields[0]:
            raise LabelError(
                f"{where}: expected {3 + NUM_CELLS} fields 'slide_name,x,y,l0..l8', "
                f"found {len(fields)}"
            )
        x = _parse_int(fields[1], "x", where)
        y = _parse_int(fields[2], "y", where)
        labels = tuple(_parse_int(v, "label", where) for v in fields[3:])
        if any(v not in (0, 1) for v in labels):
            raise LabelError(f"{where}: labels must be 0 or 1, found {list(labels)}")
        rows.append(LabelRow(fields[0], x, y, labels, path, lineno))
    return rows


def write_label_csv(rows: Sequence[LabelRow], path: Path | str) -> Path:
    """Write rows as a header-less label CSV; returns the path."""
    path = Path(path)
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for row in rows:
            writer.writerow(row.as_csv())
    return path


def find_file(directory: Path, name: str, suffixes: Sequence[str]) -> Path | None:
    """``directory/name<suffix>`` for the first suffix that exists, else None."""
    for suffix in suffixes:
        candidate = directory / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def reader_slide_size(reader: str) -> SlideSizeFn:
    """A function returning a slide's level-0 (w, h) through ``open_slide(path, reader)``."""

    def size(path: Path) -> tuple[int, int]:
        from wsi_tumor.slide import open_slide

        with open_slide(path, reader=reader) as slide:
            w, h = slide.level_dimensions[0]
        return int(w), int(h)

    return size


def reader_slide_scale(reader: str, mpp: float | None = None) -> SlideScaleFn:
    """A function giving a slide's level-0 pixels per training (model) pixel.

    Args:
        reader: Slide reader backend.
        mpp: Level-0 um/px forced for every slide (None: each file's own).
    """

    def scale(path: Path) -> float:
        from wsi_tumor.slide import open_slide
        from wsi_tumor.slide.resolution import plan_resolution

        with open_slide(path, reader=reader) as slide:
            return plan_resolution(slide, override=mpp).slide_px_per_view_px

    return scale


def check_centres(
    items: Sequence[Centre] | Sequence[LabelRow],
    images: Path,
    slide_size: SlideSizeFn,
) -> dict[str, Path]:
    """Check that every slide exists and every centre lies inside its slide.

    Returns:
        Slide name -> slide path for every slide named.

    Raises:
        LabelError: naming file and line of the first offending entry.
    """
    paths: dict[str, Path] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for item in items:
        if item.slide not in paths:
            found = find_file(images, item.slide, SLIDE_SUFFIXES)
            if found is None:
                raise LabelError(
                    f"{item.where}: slide {item.slide!r} not found in {images} "
                    f"(looked for {', '.join(SLIDE_SUFFIXES)})"
                )
            try:
                sizes[item.slide] = slide_size(found)
            except LabelError:
                raise
            except WsiTumorError as exc:
                raise LabelError(f"{item.where}: cannot open slide {found}: {exc}") from exc
            paths[item.slide] = found
        w, h = sizes[item.slide]
        if not (0 <= item.x < w and 0 <= item.y < h):
            raise LabelError(
                f"{item.where}: centre ({item.x}, {item.y}) is outside slide {item.slide!r} "
                f"of size {w} x {h}"
            )
    return paths


def label_centres(
    centres: Sequence[Centre],
    annotations: Path | None,
    scales: Mapping[str, float] | None = None,
) -> list[LabelRow]:
    """Label the nine grid cells around each centre from the slide's tumour polygons.

    A slide without an annotation file in ``annotations`` (a normal slide) gets all zeros.
    ``scales`` gives each slide's level-0 pixels per training pixel (default 1: the cells
    are 256 level-0 pixels apart, as on CAMELYON16).
    """
    from wsi_tumor.annotations.formats import Polygon, read_annotations
    from wsi_tumor.annotations.polygons import contains

    polygons_by_slide: dict[str, list[Polygon]] = {}
    rows = []
    for centre in centres:
        if centre.slide not in polygons_by_slide:
            found = (
                find_file(annotations, centre.slide, ANNOTATION_SUFFIXES)
                if annotations is not None
                else None
            )
            polygons_by_slide[centre.slide] = list(read_annotations(found)) if found else []
            log.debug("%s: %d polygons", centre.slide, len(polygons_by_slide[centre.slide]))
        polygons = polygons_by_slide[centre.slide]
        points = cell_centres_csv_order(centre.x, centre.y, (scales or {}).get(centre.slide, 1.0))
        if polygons:
            inside = np.asarray(contains(polygons, points), dtype=bool)
        else:
            inside = np.zeros(NUM_CELLS, dtype=bool)
        labels = tuple(int(v) for v in inside)
        rows.append(LabelRow(centre.slide, centre.x, centre.y, labels, centre.source, centre.line))
    return rows


def make_labels(
    coords: Sequence[Path],
    images: Path,
    annotations: Path | None,
    slide_size: SlideSizeFn,
    slide_scale: SlideScaleFn | None = None,
) -> list[LabelRow]:
    """Read coords files, check them against the slides and label each centre's grid.

    ``slide_scale`` (default: every slide at the training resolution) places the grid
    cells of slides scanned at another resolution (:func:`reader_slide_scale`).
    """
    centres = [c for path in coords for c in read_coords(path)]
    paths = check_centres(centres, images, slide_size)
    scales = {name: slide_scale(path) for name, path in paths.items()} if slide_scale else None
    return label_centres(centres, annotations, scales)
