"""QuPath GeoJSON: one ``detection`` Feature per cell, written as a stream.

What QuPath (0.4+) reads from a GeoJSON FeatureCollection:

* each Feature has ``"type": "Feature"``, an ``id`` (a UUID string; here a UUID5 of the
  cell id, so reruns give the same ids), a ``geometry`` (a Polygon or MultiPolygon in
  level-0 pixel coordinates, rings closed) and ``properties`` with
  ``"objectType": "detection"``;
* ``properties.classification`` is ``{"name": str, "color": [r, g, b]}`` (ints 0–255);
* ``properties.measurements`` is a mapping of names to numbers (NaN is not JSON: left out).

Features are produced one at a time and written as they come (gzip when the file name
ends in ``.gz``), so a slide with 10⁶ cells never sits in memory as one document.
"""

from __future__ import annotations

import gzip
import json
import math
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import shapely
from shapely.geometry import mapping

NAMESPACE = uuid.UUID("6f0d1b2c-5c1e-4f51-9a4e-6b1d0c6a9e3b")  # histocluster cells
MEASUREMENTS = {
    "Area µm^2": "area_um2",
    "Perimeter µm": "perimeter_um",
    "Circularity": "circularity",
    "Solidity": "solidity",
    "Eccentricity": "eccentricity",
    "Major axis µm": "major_axis_um",
    "Minor axis µm": "minor_axis_um",
    "Hematoxylin OD mean": "hematoxylin_mean",
    "Hematoxylin OD std": "hematoxylin_std",
    "Eosin OD mean": "eosin_mean",
    "Eosin OD std": "eosin_std",
    "Cluster": "cluster_id",
    "Cluster confidence": "cluster_confidence",
    "Label confidence": "label_confidence",
}


def cell_uuid(cell_id: str) -> str:
    """A stable UUID for a cell id."""
    return str(uuid.uuid5(NAMESPACE, cell_id))


def features(cells: pd.DataFrame, colours: dict[str, tuple[int, int, int]]) -> Iterator[dict]:
    """GeoJSON Features of ``cells`` (the cell table joined with ``class_name`` and
    optionally ``cluster_id``, ``cluster_confidence``, ``label_confidence``)."""
    present = {name: column for name, column in MEASUREMENTS.items() if column in cells.columns}
    for row in cells.itertuples(index=False):
        geometry = shapely.set_precision(shapely.from_wkb(row.polygon), 0.01)  # 1/100 px is plenty
        if not geometry.is_valid or geometry.is_empty:
            geometry = shapely.make_valid(shapely.from_wkb(row.polygon))
        shape = mapping(geometry)
        measurements = {}
        for name, column in present.items():
            value = getattr(row, column)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                measurements[name] = float(value)
        name = str(row.class_name)
        yield {
            "type": "Feature",
            "id": cell_uuid(row.cell_id),
            "geometry": {"type": shape["type"], "coordinates": shape["coordinates"]},
            "properties": {
                "objectType": "detection",
                "name": row.cell_id,
                "classification": {"name": name, "color": list(colours.get(name, (128, 128, 128)))},
                "measurements": measurements,
            },
        }


def write_feature_collection(path: str | Path, items: Iterable[dict]) -> int:
    """Stream ``items`` into a FeatureCollection at ``path`` (gzip for ``.gz``); written
    to a temporary name and renamed, so a crash leaves no half file. Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    opener = gzip.open if path.suffix == ".gz" else open
    count = 0
    with opener(partial, "wt", encoding="utf-8") as handle:
        handle.write('{"type": "FeatureCollection", "features": [\n')
        for feature in items:
            if count:
                handle.write(",\n")
            handle.write(json.dumps(feature, separators=(",", ":"), allow_nan=False))
            count += 1
        handle.write("\n]}\n")
    partial.replace(path)
    return count


def read_feature_collection(path: str | Path) -> dict:
    """Read a (possibly gzipped) FeatureCollection back."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)
