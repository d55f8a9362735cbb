"""QuPath GeoJSON: one ``detection`` Feature per cell, written as a stream.

What QuPath (0.4+) reads from a GeoJSON FeatureCollection:

* each Feature has ``"type": "Feature"``, an ``id`` (a UUID string; here a UUID5 of the
  cell id, so reruns give the same ids), a ``geometry`` (a Polygon or MultiPolygon in
  level-0 pixel coordinates, rings closed) and ``properties`` with
  ``"objectType": "detection"``;
* ``properties.classification`` is ``{"name": str, "color": [r, g, b]}`` (ints 0–255);
  cells no one has named (``unlabelled``) have none, as in QuPath;
* ``properties.measurements`` is a mapping of names to numbers (NaN is not JSON: left out).

Features are produced one at a time and written as they come (gzip when the file name
ends in ``.gz``), so a slide with 10⁶ cells never sits in memory as one document.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from histocluster.atomic_files import atomic_path
from histocluster.labelling.cluster_labels import UNLABELLED

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


def geometries_geojson(polygons: np.ndarray) -> np.ndarray:
    """GeoJSON geometry strings of WKB polygons, coordinates to 1/100 px (plenty), invalid
    ones repaired: one vectorised parse and one vectorised encoding for all of them."""
    geometries = shapely.set_precision(shapely.from_wkb(polygons), 0.01)
    bad = ~shapely.is_valid(geometries) | shapely.is_empty(geometries)
    if bad.any():
        geometries[bad] = shapely.make_valid(shapely.from_wkb(polygons[bad]))
    return shapely.to_geojson(geometries)


#: Cells encoded together by :func:`features` (vectorised geometry and measurements per
#: block, so that a slide's geometries never all sit in memory at once).
FEATURE_BLOCK = 20_000


def features(
    cells: pd.DataFrame, colours: dict[str, tuple[int, int, int]], block: int = FEATURE_BLOCK
) -> Iterator[str]:
    """GeoJSON Features (encoded JSON text) of ``cells`` (the cell table joined with
    ``class_name`` and optionally ``cluster_id``, ``cluster_confidence``,
    ``label_confidence``): geometry and measurements for ``block`` cells at a time, then
    one Feature at a time."""
    present = {name: column for name, column in MEASUREMENTS.items() if column in cells.columns}
    names = list(present)
    classes = {  # QuPath's convention: a cell no one has named has no classification
        name: ""
        if name == UNLABELLED
        else f'"classification":{json.dumps({"name": name, "color": list(colours.get(name, (128, 128, 128)))})},'
        for name in cells["class_name"].astype(str).unique()
    }
    for start in range(0, len(cells), block):
        rows = cells.iloc[start : start + block]
        values = rows[list(present.values())].to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        shapes = geometries_geojson(rows["polygon"].to_numpy())
        for k, (cell_id, class_name) in enumerate(
            zip(rows["cell_id"], rows["class_name"].astype(str), strict=True)
        ):
            measurements = {names[j]: float(values[k, j]) for j in np.flatnonzero(finite[k])}
            yield (
                f'{{"type":"Feature","id":"{cell_uuid(cell_id)}","geometry":{shapes[k]},'
                f'"properties":{{"objectType":"detection","name":{json.dumps(cell_id)},'
                f"{classes[class_name]}"
                f'"measurements":{json.dumps(measurements, separators=(",", ":"))}}}}}'
            )


def write_feature_collection(path: str | Path, items: Iterable[dict]) -> int:
    """Stream ``items`` into a FeatureCollection at ``path`` (gzip for ``.gz``); written
    to a temporary name and renamed, so a crash leaves no half file. Returns the count."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    count = 0
    with atomic_path(path) as partial, opener(partial, "wt", encoding="utf-8") as handle:
        handle.write('{"type": "FeatureCollection", "features": [\n')
        for feature in items:
            if count:
                handle.write(",\n")
            # Features come encoded (str) from :func:`features`, or as dicts.
            handle.write(
                feature
                if isinstance(feature, str)
                else json.dumps(feature, separators=(",", ":"), allow_nan=False)
            )
            count += 1
        handle.write("\n]}\n")
    return count


def read_feature_collection(path: str | Path) -> dict:
    """Read a (possibly gzipped) FeatureCollection back."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)
