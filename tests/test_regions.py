"""Regions of interest from ASAP XML and GeoJSON files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from histocluster.wsi.regions import (
    RegionFileError,
    assign_regions,
    find_region_files,
    load_regions,
    rasterize,
    read_asap_xml,
    read_geojson,
)

ASAP = """<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="tumour" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="1" X="1000" Y="100" />
        <Coordinate Order="0" X="100" Y="100" />
        <Coordinate Order="2" X="1000" Y="600" />
        <Coordinate Order="3" X="100" Y="600" />
      </Coordinates>
    </Annotation>
    <Annotation Name="stroma bit" Type="Rectangle" PartOfGroup="None">
      <Coordinates>
        <Coordinate Order="0" X="2000" Y="0" /><Coordinate Order="1" X="2400" Y="0" />
        <Coordinate Order="2" X="2400" Y="400" /><Coordinate Order="3" X="2000" Y="400" />
      </Coordinates>
    </Annotation>
    <Annotation Name="a dot" Type="Dot" PartOfGroup="None">
      <Coordinates><Coordinate Order="0" X="5" Y="5" /></Coordinates>
    </Annotation>
  </Annotations>
</ASAP_Annotations>
"""


def qupath_feature(coords, name):
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [coords]},
        "properties": {"objectType": "annotation", "classification": {"name": name, "color": [255, 0, 0]}},
    }


def test_asap_xml(tmp_path):
    path = tmp_path / "s.xml"
    path.write_text(ASAP)
    regions = read_asap_xml(path)
    assert [r.name for r in regions] == ["tumour", "stroma bit"]
    # Coordinates are sorted by Order: the out-of-order file still gives a rectangle.
    assert regions[0].geometry.area == pytest.approx(900 * 500)
    assert regions[1].geometry.bounds == (2000, 0, 2400, 400)


def test_geojson_feature_collection_and_list(tmp_path):
    square = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]
    collection = tmp_path / "a.geojson"
    collection.write_text(
        json.dumps({"type": "FeatureCollection", "features": [qupath_feature(square, "Tumor")]})
    )
    listed = tmp_path / "b.json"
    listed.write_text(
        json.dumps(
            [
                qupath_feature(square, "Stroma"),
                {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]}, "properties": {}},
            ]
        )
    )
    assert [(r.name, r.geometry.area) for r in read_geojson(collection)] == [("Tumor", 10_000)]
    assert [r.name for r in read_geojson(listed)] == ["Stroma"]


def test_self_intersecting_polygon_is_repaired(tmp_path):
    bowtie = [[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]
    path = tmp_path / "x.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [qupath_feature(bowtie, "r")]}))
    (region,) = read_geojson(path)
    assert region.geometry.is_valid and region.geometry.area == pytest.approx(5000)


@pytest.mark.parametrize(("name", "text"), [("s.xml", "<ASAP_Annotations><oops"), ("s.geojson", "{not json")])
def test_broken_files_name_the_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(RegionFileError, match=name):
        load_regions(tmp_path / "s.svs")


def test_files_beside_the_slide(tmp_path):
    (tmp_path / "s.svs").write_bytes(b"x")
    (tmp_path / "s.xml").write_text(ASAP)
    (tmp_path / "other.geojson").write_text("{}")
    assert find_region_files(tmp_path / "s.svs") == [tmp_path / "s.xml"]
    assert len(load_regions(tmp_path / "s.svs")) == 2


def test_assign_and_rasterize(tmp_path):
    path = tmp_path / "s.xml"
    path.write_text(ASAP)
    regions = read_asap_xml(path)
    boxes = np.array([[0, 0, 200, 200], [900, 500, 1200, 200], [5000, 5000, 10, 10], [1900, 0, 200, 200]])
    # The second box overlaps "tumour" by 100×100 and "stroma bit" not at all.
    assert assign_regions(regions, boxes) == ["tumour", "tumour", None, "stroma bit"]
    mask = rasterize(regions, (100, 300), (10.0, 10.0))
    assert mask[30, 50] and mask[20, 220] and not mask[80, 150]
    assert mask[10:60, 10:100].mean() > 0.95
