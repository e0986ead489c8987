"""Annotations: ASAP XML / NCRF JSON round trips, point tests, rasterisation, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import polygon as draw_polygon

from wsi_tumor.annotations.formats import (
    Polygon,
    read_annotations,
    read_asap_xml,
    read_ncrf_json,
    write_asap_xml,
    write_ncrf_json,
)
from wsi_tumor.annotations.polygons import contains, rasterize
from wsi_tumor.errors import AnnotationError

# A CAMELYON16-style file: two tumour groups, an exclusion hole, float coordinates,
# coordinates listed out of order (Order decides).
ASAP_XML = """<?xml version="1.0"?>
<ASAP_Annotations>
\t<Annotations>
\t\t<Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
\t\t\t<Coordinates>
\t\t\t\t<Coordinate Order="0" X="100.5" Y="100" />
\t\t\t\t<Coordinate Order="2" X="900" Y="900.25" />
\t\t\t\t<Coordinate Order="1" X="900" Y="100" />
\t\t\t\t<Coordinate Order="3" X="100" Y="900" />
\t\t\t</Coordinates>
\t\t</Annotation>
\t\t<Annotation Name="Annotation 1" Type="Polygon" PartOfGroup="_2" Color="#64FE2E">
\t\t\t<Coordinates>
\t\t\t\t<Coordinate Order="0" X="410" Y="410" />
\t\t\t\t<Coordinate Order="1" X="590" Y="410" />
\t\t\t\t<Coordinate Order="2" X="590" Y="590" />
\t\t\t\t<Coordinate Order="3" X="410" Y="590" />
\t\t\t</Coordinates>
\t\t</Annotation>
\t\t<Annotation Name="Annotation 2" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58">
\t\t\t<Coordinates>
\t\t\t\t<Coordinate Order="0" X="1200" Y="1200" />
\t\t\t\t<Coordinate Order="1" X="1500.125" Y="1250" />
\t\t\t\t<Coordinate Order="2" X="1300" Y="1500" />
\t\t\t</Coordinates>
\t\t</Annotation>
\t</Annotations>
\t<AnnotationGroups />
</ASAP_Annotations>
"""


@pytest.fixture()
def xml_file(tmp_path: Path) -> Path:
    path = tmp_path / "tumor_001.xml"
    path.write_text(ASAP_XML)
    return path


def test_read_asap_xml_values(xml_file: Path) -> None:
    polygons = read_asap_xml(xml_file)
    assert [(p.name, p.group, p.is_exclusion) for p in polygons] == [
        ("Annotation 0", "_0", False),
        ("Annotation 1", "_2", True),
        ("Annotation 2", "Tumor", False),
    ]
    np.testing.assert_array_equal(
        polygons[0].vertices, [[100.5, 100], [900, 100], [900, 900.25], [100, 900]]
    )
    assert polygons[0].vertices.dtype == np.float64
    assert not polygons[0].vertices.flags.writeable


def test_round_trip_xml_and_json_identical(xml_file: Path, tmp_path: Path) -> None:
    polygons = read_asap_xml(xml_file)
    write_asap_xml(tmp_path / "again.xml", polygons)
    write_ncrf_json(tmp_path / "again.json", polygons)
    assert read_asap_xml(tmp_path / "again.xml") == polygons
    # NCRF keeps tumour polygons ("positive") and exclusions ("negative") in separate lists
    in_ncrf_order = [p for p in polygons if not p.is_exclusion] + [
        p for p in polygons if p.is_exclusion
    ]
    assert read_annotations(tmp_path / "again.json") == in_ncrf_order
    assert read_annotations(tmp_path / "again.xml") == polygons
    assert not list(tmp_path.glob(".*.tmp"))


def test_ncrf_json_without_group_uses_camelyon_groups(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(
        '{"positive": [{"name": "Annotation 0", "vertices": [[0, 0], [10, 0], [10, 10]]}],'
        ' "negative": [{"name": "Annotation 1", "vertices": [[2, 2], [4, 2], [4, 4]]}]}'
    )
    polygons = read_ncrf_json(path)
    assert [(p.group, p.is_exclusion) for p in polygons] == [("_0", False), ("_2", True)]


def test_contains_and_exclusion_hole(xml_file: Path) -> None:
    polygons = read_asap_xml(xml_file)
    points = [(200, 200), (500, 500), (950, 500), (1300, 1300), (50, 50), (405, 500)]
    np.testing.assert_array_equal(
        contains(polygons, points), [True, False, False, True, False, True]
    )


def test_rasterize_cuts_exclusion_holes(xml_file: Path) -> None:
    polygons = read_asap_xml(xml_file)
    mask = rasterize(polygons, shape=(50, 50), downsample=32.0)
    assert mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    # pixel (row, col) centre is ((col + 0.5) * 32, (row + 0.5) * 32)
    assert mask[6, 6] == 1  # (208, 208): tumour
    assert mask[15, 15] == 0  # (496, 496): inside the exclusion
    assert mask[2, 2] == 0  # (80, 80): outside
    hole = rasterize([p for p in polygons if p.name == "Annotation 0"], (50, 50), 32.0)
    assert hole[15, 15] == 1
    # the exclusion 410..590 holds the centres of rows/cols 13..17: (i + 0.5) * 32 = 432..560
    cut = hole - rasterize(polygons[:2], (50, 50), 32.0)
    expected = np.zeros((50, 50), np.uint8)
    expected[13:18, 13:18] = 1
    np.testing.assert_array_equal(cut, expected)


def test_rasterize_matches_skimage_draw_polygon() -> None:
    """Same pixels as skimage.draw.polygon on ``vertices / downsample - 0.5`` (centres)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(3, 40))
        theta = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(100, 900, n)
        vertices = np.round(np.c_[1000 + radius * np.cos(theta), 950 + radius * np.sin(theta)], 2)
        downsample = float(rng.choice([1.0, 8.0, 32.0]))
        shape = (int(np.ceil(2000 / downsample)), int(np.ceil(2100 / downsample)))
        ours = rasterize([Polygon("a", "_0", vertices)], shape, downsample)
        reference = np.zeros(shape, np.uint8)
        rr, cc = draw_polygon(
            vertices[:, 1] / downsample - 0.5, vertices[:, 0] / downsample - 0.5, shape
        )
        reference[rr, cc] = 1
        np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("<ASAP_Annotations><Annotations>", "malformed XML"),
        ("<Other />", "expected <ASAP_Annotations>"),
        (ASAP_XML.replace('X="900" Y="100"', 'X="abc" Y="100"'), "non-numeric X='abc'"),
        (
            ASAP_XML.replace('\t\t\t\t<Coordinate Order="2" X="1300" Y="1500" />\n', ""),
            "at least 3 vertices",
        ),
    ],
)
def test_malformed_xml_raises_with_file_name(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad_slide.xml"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=r"bad_slide\.xml") as info:
        read_asap_xml(path)
    assert needle in str(info.value)


def test_malformed_xml_names_annotation_and_line(tmp_path: Path) -> None:
    path = tmp_path / "t.xml"
    path.write_text(ASAP_XML.replace('X="900" Y="100"', 'X="9x" Y="100"'))
    with pytest.raises(AnnotationError, match=r"t\.xml: line 8: annotation 'Annotation 0'"):
        read_asap_xml(path)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"positive": [', "line 1: malformed JSON"),
        ("[1, 2]", "'positive' and 'negative'"),
        (
            '{"positive": [{"name": "A", "vertices": [[0, 0], [1, 1]]}], "negative": []}',
            "at least 3 vertices",
        ),
        (
            '{"positive": [{"name": "A", "vertices": [[0, 0], [1, "x"], [2, 2]]}]}',
            "not a numeric [x, y] pair",
        ),
    ],
)
def test_malformed_json_raises_with_file_name(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad_slide.json"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=r"bad_slide\.json") as info:
        read_ncrf_json(path)
    assert needle in str(info.value)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match=r"nope\.xml"):
        read_annotations(tmp_path / "nope.xml")
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        read_annotations(tmp_path / "a.geojson")


def test_polygon_validation() -> None:
    with pytest.raises(AnnotationError, match="at least 3 vertices"):
        Polygon("x", "_0", np.zeros((2, 2)))
    with pytest.raises(AnnotationError, match="non-finite"):
        Polygon("x", "_0", np.array([[0, 0], [1, np.nan], [2, 2]]))
