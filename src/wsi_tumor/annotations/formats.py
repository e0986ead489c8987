"""Lesion annotations: ASAP XML (CAMELYON16) and NCRF JSON.

Vertices are level-0 (x, y) floats. CAMELYON16 groups ``_0``, ``_1`` and ``Tumor`` are
tumour, ``_2`` and ``Exclusion`` are regions cut out of the tumour (normal islands); a
point is tumour when it lies inside some tumour polygon and inside no exclusion polygon,
which is also how :func:`~wsi_tumor.annotations.polygons.rasterize` paints a mask. Polygons of
other groups are kept by the readers but ignored by :mod:`wsi_tumor.annotations.polygons`.

The XML layout is ASAP's::

    <ASAP_Annotations>
      <Annotations>
        <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
          <Coordinates>
            <Coordinate Order="0" X="1234.5" Y="678.25" />
            ...

The JSON layout is NCRF's (``camelyon16xml2json``): ``{"positive": [{"name", "vertices"}],
"negative": [...]}`` with tumour polygons under ``positive`` and exclusions under
``negative``; we add a ``group`` key to each entry so a round trip keeps the group (NCRF's
reader ignores it).
"""

from __future__ import annotations

import json
import logging
import math
import xml.parsers.expat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import numpy.typing as npt

from wsi_tumor.errors import AnnotationError
from wsi_tumor.fileio import format_number, write_text

log = logging.getLogger(__name__)

TUMOR_GROUPS = frozenset({"_0", "_1", "tumor"})
"""Groups (compared lower-case) whose polygons are tumour."""
EXCLUSION_GROUPS = frozenset({"_2", "exclusion"})
"""Groups (compared lower-case) whose polygons are cut out of the tumour."""
DEFAULT_TUMOR_GROUP = "_0"
"""Group given to NCRF ``positive`` entries that carry none."""
DEFAULT_EXCLUSION_GROUP = "_2"
"""Group given to NCRF ``negative`` entries that carry none."""
POLYGON_TYPES = frozenset({"polygon", "spline", "rectangle"})
"""ASAP annotation types read as polygons; dots, point sets and rulers are skipped."""
_GROUP_COLORS = {"_0": "#F4FA58", "_1": "#F4FA58", "_2": "#64FE2E"}

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Polygon:
    """One annotated region.

    Attributes:
        name: Annotation name (``"Annotation 0"`` in CAMELYON16 files).
        group: ASAP group (``_0``/``_1``/``Tumor`` tumour, ``_2``/``Exclusion`` excluded).
        vertices: (n, 2) float64 level-0 (x, y), n >= 3, read-only.
    """

    name: str
    group: str
    vertices: FloatArray

    def __post_init__(self) -> None:
        try:
            vertices = np.array(self.vertices, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise AnnotationError(f"annotation {self.name!r}: non-numeric vertices") from exc
        if vertices.ndim != 2 or vertices.shape[1] != 2:
            raise AnnotationError(
                f"annotation {self.name!r}: vertices must be (n, 2) x, y pairs, "
                f"got shape {vertices.shape}"
            )
        if vertices.shape[0] < 3:
            raise AnnotationError(
                f"annotation {self.name!r}: a polygon needs at least 3 vertices, "
                f"got {vertices.shape[0]}"
            )
        if not np.isfinite(vertices).all():
            raise AnnotationError(f"annotation {self.name!r}: non-finite vertex coordinates")
        vertices.setflags(write=False)
        object.__setattr__(self, "vertices", vertices)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Polygon):
            return NotImplemented
        return (
            self.name == other.name
            and self.group == other.group
            and np.array_equal(self.vertices, other.vertices)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.group, self.vertices.tobytes()))

    @property
    def is_exclusion(self) -> bool:
        """True for an exclusion (``_2``/``Exclusion``) polygon."""
        return self.group.lower() in EXCLUSION_GROUPS

    @property
    def is_tumor(self) -> bool:
        """True for a tumour (``_0``/``_1``/``Tumor``) polygon."""
        return self.group.lower() in TUMOR_GROUPS


# --- ASAP XML ---------------------------------------------------------------------------------
def _coordinate(value: str | None, axis: str, where: str) -> float:
    if value is None:
        raise AnnotationError(f"{where}: Coordinate without {axis}")
    try:
        number = float(value)
    except ValueError:
        raise AnnotationError(f"{where}: non-numeric {axis}={value!r}") from None
    if not math.isfinite(number):
        raise AnnotationError(f"{where}: non-finite {axis}={value!r}")
    return number


class _AsapHandler:
    """Expat callbacks collecting annotations with the line each starts on."""

    def __init__(self, path: Path, parser: xml.parsers.expat.XMLParserType) -> None:
        self.path = path
        self.parser = parser
        self.root: str | None = None
        self.polygons: list[Polygon] = []
        self._current: dict[str, Any] | None = None

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        line = self.parser.CurrentLineNumber
        if self.root is None:
            self.root = tag
            if tag != "ASAP_Annotations":
                raise AnnotationError(
                    f"{self.path}: line {line}: root element is <{tag}>, "
                    "expected <ASAP_Annotations>"
                )
        if tag == "Annotation":
            self._current = {
                "name": attrs.get("Name", f"Annotation {len(self.polygons)}"),
                "group": attrs.get("PartOfGroup", "None"),
                "type": attrs.get("Type", "Polygon"),
                "line": line,
                "points": [],
            }
        elif tag == "Coordinate" and self._current is not None:
            where = f"{self.path}: line {line}: annotation {self._current['name']!r}"
            x = _coordinate(attrs.get("X"), "X", where)
            y = _coordinate(attrs.get("Y"), "Y", where)
            order_text = attrs.get("Order")
            try:
                order = float(order_text) if order_text is not None else math.inf
            except ValueError:
                raise AnnotationError(f"{where}: non-numeric Order={order_text!r}") from None
            self._current["points"].append((order, len(self._current["points"]), x, y))

    def end(self, tag: str) -> None:
        if tag != "Annotation" or self._current is None:
            return
        ann, self._current = self._current, None
        where = f"{self.path}: line {ann['line']}: annotation {ann['name']!r}"
        if str(ann["type"]).lower() not in POLYGON_TYPES:
            log.warning("%s: skipping non-polygon type %r", where, ann["type"])
            return
        points = sorted(ann["points"])  # by Order, then document order
        if len(points) < 3:
            raise AnnotationError(
                f"{where}: a polygon needs at least 3 vertices, got {len(points)}"
            )
        vertices = np.array([(x, y) for _, _, x, y in points], dtype=np.float64)
        polygon = Polygon(str(ann["name"]), str(ann["group"]), vertices)
        if not (polygon.is_tumor or polygon.is_exclusion):
            log.warning("%s: group %r is neither tumour nor exclusion", where, polygon.group)
        self.polygons.append(polygon)


def read_asap_xml(path: str | Path) -> list[Polygon]:
    """Read the polygons of an ASAP (CAMELYON16) XML annotation file.

    Args:
        path: The ``.xml`` file.

    Returns:
        The polygons in file order; coordinates are sorted by their ``Order`` attribute.

    Raises:
        AnnotationError: The file is missing, is not well-formed XML, is not an ASAP file, or
            an annotation has non-numeric coordinates or fewer than 3 vertices; the message
            names the file, the line and the annotation.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read annotation file: {exc.strerror}") from exc
    parser = xml.parsers.expat.ParserCreate()
    handler = _AsapHandler(path, parser)
    parser.StartElementHandler = handler.start
    parser.EndElementHandler = handler.end
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise AnnotationError(
            f"{path}: line {exc.lineno}: malformed XML: {xml.parsers.expat.ErrorString(exc.code)}"
        ) from exc
    if handler.root is None:
        raise AnnotationError(f"{path}: empty XML document")
    return handler.polygons


def write_asap_xml(path: str | Path, polygons: Sequence[Polygon]) -> None:
    """Write polygons as an ASAP XML file (written to a temporary name, then renamed).

    Coordinates are written with Python's shortest round-trip float representation, so
    :func:`read_asap_xml` gives back identical vertices.

    Args:
        path: Destination ``.xml`` file.
        polygons: Polygons to write, in order.
    """
    path = Path(path)
    lines = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "\t<Annotations>"]
    for polygon in polygons:
        color = _GROUP_COLORS.get(polygon.group, "#F4FA58")
        lines.append(
            f'\t\t<Annotation Name={quoteattr(polygon.name)} Type="Polygon" '
            f'PartOfGroup={quoteattr(polygon.group)} Color="{color}">'
        )
        lines.append("\t\t\t<Coordinates>")
        for order, (x, y) in enumerate(polygon.vertices):
            lines.append(
                f'\t\t\t\t<Coordinate Order="{order}" X="{format_number(x)}" '
                f'Y="{format_number(y)}" />'
            )
        lines.extend(["\t\t\t</Coordinates>", "\t\t</Annotation>"])
    lines.extend(["\t</Annotations>", "\t<AnnotationGroups>"])
    for group in dict.fromkeys(p.group for p in polygons):
        color = _GROUP_COLORS.get(group, "#F4FA58")
        lines.append(
            f'\t\t<Group Name={quoteattr(group)} PartOfGroup="None" Color="{color}">'
            "\n\t\t\t<Attributes />\n\t\t</Group>"
        )
    lines.extend(["\t</AnnotationGroups>", "</ASAP_Annotations>", ""])
    write_text(path, "\n".join(lines))


# --- NCRF JSON --------------------------------------------------------------------------------
def _json_polygon(entry: object, key: str, index: int, path: Path) -> Polygon:
    where = f"{path}: {key}[{index}]"
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where}: expected an object with name and vertices")
    name = entry.get("name", f"Annotation {index}")
    where = f"{where} (annotation {name!r})"
    default_group = DEFAULT_TUMOR_GROUP if key == "positive" else DEFAULT_EXCLUSION_GROUP
    group = entry.get("group", default_group)
    vertices = entry.get("vertices")
    if not isinstance(vertices, list):
        raise AnnotationError(f"{where}: 'vertices' must be a list of [x, y] pairs")
    for vertex in vertices:
        if (
            not isinstance(vertex, list | tuple)
            or len(vertex) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in vertex)
        ):
            raise AnnotationError(f"{where}: vertex {vertex!r} is not a numeric [x, y] pair")
    try:
        polygon = Polygon(str(name), str(group), np.array(vertices, dtype=np.float64))
    except AnnotationError as exc:
        raise AnnotationError(f"{path}: {key}[{index}]: {exc}") from None
    if (key == "positive" and polygon.is_exclusion) or (key == "negative" and polygon.is_tumor):
        raise AnnotationError(f"{where}: group {polygon.group!r} does not belong in {key!r}")
    return polygon


def read_ncrf_json(path: str | Path) -> list[Polygon]:
    """Read an NCRF-style JSON annotation: ``{"positive": [...], "negative": [...]}``.

    Args:
        path: The ``.json`` file.

    Returns:
        Tumour polygons (``positive``) followed by exclusions (``negative``). Entries without
        a ``group`` key get ``_0`` (positive) or ``_2`` (negative).

    Raises:
        AnnotationError: The file is missing, not valid JSON (the message gives the line),
            lacks both keys, or an entry has non-numeric vertices or fewer than 3 of them.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot read annotation file: {exc}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: line {exc.lineno}: malformed JSON: {exc.msg}") from exc
    if not isinstance(document, dict) or not ({"positive", "negative"} & document.keys()):
        raise AnnotationError(f"{path}: expected an object with 'positive' and 'negative' lists")
    polygons: list[Polygon] = []
    for key in ("positive", "negative"):
        entries = document.get(key, [])
        if not isinstance(entries, list):
            raise AnnotationError(f"{path}: {key!r} must be a list")
        polygons.extend(_json_polygon(entry, key, i, path) for i, entry in enumerate(entries))
    return polygons


def write_ncrf_json(path: str | Path, polygons: Sequence[Polygon]) -> None:
    """Write polygons in NCRF's JSON layout (temporary name, then renamed).

    Tumour polygons go under ``positive`` and exclusions under ``negative`` (so reading the
    file back gives the tumour polygons first, then the exclusions); vertices stay floats
    (NCRF's own converter rounds them to integers, its reader accepts both).

    Args:
        path: Destination ``.json`` file.
        polygons: Polygons to write; other-group polygons are skipped with a warning.
    """
    document: dict[str, list[dict[str, Any]]] = {"positive": [], "negative": []}
    for polygon in polygons:
        key = "negative" if polygon.is_exclusion else "positive" if polygon.is_tumor else None
        if key is None:
            log.warning("%s: skipping %r of group %r", path, polygon.name, polygon.group)
            continue
        document[key].append(
            {"name": polygon.name, "group": polygon.group, "vertices": polygon.vertices.tolist()}
        )
    write_text(path, json.dumps(document, indent=1) + "\n")


def read_annotations(path: str | Path) -> list[Polygon]:
    """Read ``.xml`` (ASAP) or ``.json`` (NCRF) annotations, chosen by the file suffix.

    Raises:
        AnnotationError: Unknown suffix, or whatever the chosen reader raises.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return read_asap_xml(path)
    if suffix == ".json":
        return read_ncrf_json(path)
    raise AnnotationError(f"{path}: unknown annotation format {suffix!r} (expected .xml or .json)")
