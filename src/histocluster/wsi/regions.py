"""Regions of interest drawn on a slide: ASAP XML and GeoJSON annotation files.

A slide ``name.svs`` may have ``name.xml`` (ASAP) and/or ``name.geojson`` /
``name.json`` (GeoJSON, as QuPath exports it) beside it. Polygons are in level-0
pixels. Tiling keeps only tiles that touch a region and tags each with the name of the
region it overlaps most.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape

REGION_SUFFIXES = (".xml", ".geojson", ".json")


class RegionFileError(ValueError):
    """An annotation file exists but cannot be read; the message names the file."""


@dataclass(frozen=True)
class Region:
    """A named region: a valid (Multi)Polygon in level-0 pixel coordinates."""

    name: str
    geometry: Polygon | MultiPolygon


def _valid(geometry, path: Path, name: str):
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    polygons = [g for g in getattr(geometry, "geoms", [geometry]) if isinstance(g, Polygon)]
    if not polygons or geometry.area <= 0:
        raise RegionFileError(f"{path}: region {name!r} has no area")
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)


def read_asap_xml(path: str | Path) -> list[Region]:
    """Polygons (and rectangles) of an ASAP XML annotation file.

    Each ``Annotation`` becomes a region named by its ``PartOfGroup`` when set (the
    class a person chose), else by its ``Name``. Dot and spline annotations have no
    area and are skipped.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise RegionFileError(f"{path}: not valid XML ({exc})") from exc
    regions = []
    for annotation in root.iter("Annotation"):
        kind = (annotation.get("Type") or "Polygon").lower()
        if kind not in {"polygon", "rectangle"}:
            continue
        coordinates = sorted(annotation.iter("Coordinate"), key=lambda c: int(float(c.get("Order", 0))))
        points = [(float(c.get("X")), float(c.get("Y"))) for c in coordinates]
        if len(points) < 3:
            continue
        group = annotation.get("PartOfGroup")
        name = group if group and group.lower() != "none" else annotation.get("Name") or "region"
        regions.append(Region(name=name, geometry=_valid(Polygon(points), path, name)))
    return regions


def _feature_name(properties: dict, index: int) -> str:
    classification = properties.get("classification") or {}
    if isinstance(classification, dict) and classification.get("name"):
        return str(classification["name"])
    for key in ("name", "Name", "label", "class"):
        if properties.get(key):
            return str(properties[key])
    return f"region_{index}"


def read_geojson(path: str | Path) -> list[Region]:
    """Polygon and MultiPolygon features of a GeoJSON file (FeatureCollection, Feature
    or a list of Features, as QuPath writes them).

    A region's name is its QuPath classification, else its ``name`` property.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegionFileError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features", [])
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise RegionFileError(f"{path}: expected a GeoJSON Feature or FeatureCollection")
    regions = []
    for index, feature in enumerate(features):
        geometry = (feature or {}).get("geometry")
        if not geometry or geometry.get("type") not in {"Polygon", "MultiPolygon"}:
            continue
        name = _feature_name(feature.get("properties") or {}, index)
        try:
            geom = shape(geometry)
        except (ValueError, TypeError, AttributeError) as exc:
            raise RegionFileError(f"{path}: feature {index} has a broken geometry ({exc})") from exc
        regions.append(Region(name=name, geometry=_valid(geom, path, name)))
    return regions


def find_region_files(slide_path: str | Path) -> list[Path]:
    """Annotation files beside a slide: same stem, suffix .xml, .geojson or .json."""
    slide_path = Path(slide_path)
    stem = slide_path.name if slide_path.is_dir() else slide_path.stem
    return [
        slide_path.with_name(stem + suffix)
        for suffix in REGION_SUFFIXES
        if slide_path.with_name(stem + suffix).is_file()
    ]


def load_regions(slide_path: str | Path) -> list[Region]:
    """Every region drawn for a slide, from all its annotation files."""
    regions: list[Region] = []
    for path in find_region_files(slide_path):
        reader = read_asap_xml if path.suffix.lower() == ".xml" else read_geojson
        regions.extend(reader(path))
    return regions


def regions_to_records(regions: list[Region]) -> list[dict]:
    """Regions as JSON-ready records (``name``, ``geometry`` as GeoJSON), so the tiling
    stage saves what it parsed and nothing parses the files again."""
    return [{"name": r.name, "geometry": json.loads(shapely.to_geojson(r.geometry))} for r in regions]


def regions_from_records(records: list[dict]) -> list[Region]:
    """The inverse of :func:`regions_to_records`."""
    return [Region(r["name"], shapely.from_geojson(json.dumps(r["geometry"]))) for r in records]


def rasterize(regions: list[Region], shape_hw: tuple[int, int], scale: tuple[float, float]) -> np.ndarray:
    """Boolean mask (``shape_hw``) of the regions, ``scale`` level-0 px per mask px."""
    from skimage.draw import polygon as draw_polygon

    mask = np.zeros(shape_hw, dtype=bool)
    sx, sy = scale
    for region in regions:
        for polygon in getattr(region.geometry, "geoms", [region.geometry]):
            outer = np.asarray(polygon.exterior.coords)
            rr, cc = draw_polygon(outer[:, 1] / sy, outer[:, 0] / sx, shape=shape_hw)
            mask[rr, cc] = True
            for interior in polygon.interiors:
                hole = np.asarray(interior.coords)
                rr, cc = draw_polygon(hole[:, 1] / sy, hole[:, 0] / sx, shape=shape_hw)
                mask[rr, cc] = False
    return mask


def assign_regions(regions: list[Region], boxes: np.ndarray) -> list[str | None]:
    """Name of the region each level-0 box ``(x, y, w, h)`` overlaps most, or None."""
    if not regions:
        return [None] * len(boxes)
    geometries = np.array([r.geometry for r in regions], dtype=object)
    tiles = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3])
    tree = shapely.STRtree(geometries)
    tile_index, region_index = tree.query(tiles, predicate="intersects")
    best: dict[int, tuple[float, int]] = {}
    for t, r in zip(tile_index, region_index, strict=True):
        area = shapely.intersection(tiles[t], geometries[r]).area
        if area > best.get(int(t), (0.0, -1))[0]:
            best[int(t)] = (area, int(r))
    return [regions[best[i][1]].name if i in best else None for i in range(len(boxes))]


__all__ = [
    "Region",
    "RegionFileError",
    "assign_regions",
    "find_region_files",
    "load_regions",
    "rasterize",
    "read_asap_xml",
    "read_geojson",
    "regions_from_records",
    "regions_to_records",
]
