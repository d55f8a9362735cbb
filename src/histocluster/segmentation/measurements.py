"""The cell table: one row per segmented cell, in level-0 coordinates and physical units.

Columns (the "cells" contract of docs/architecture.md):

* ids: ``cell_id`` (``<tile_id>_n<k>``, objects numbered by centroid row then column,
  so reruns on the same input and parameters give the same ids), ``slide_id``,
  ``tile_id``;
* position: ``centroid_x``, ``centroid_y``, ``bbox_x0``, ``bbox_y0``, ``bbox_x1``,
  ``bbox_y1`` and ``polygon`` (WKB bytes of a shapely Polygon), all in level-0 pixels;
* shape: ``area_um2``, ``perimeter_um``, ``eccentricity``, ``solidity``,
  ``circularity`` (4π·area/perimeter², 1 for a disc), ``major_axis_um``,
  ``minor_axis_um``;
* stain: mean and standard deviation of haematoxylin and eosin optical density inside
  the cell (colour deconvolution, Ruifrok & Johnston);
* ``segmenter`` and its ``score`` for the object: the mean of the segmenter's per-pixel
  confidence over it (the network's nucleus probability, Cellpose's cell probability),
  NaN for the threshold foreground, which has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import Polygon

from histocluster.wsi.stain import stain_densities
from histocluster.wsi.tile_grid import tile_scale, to_level0

#: Shape measurements of the cell table (physical units).
SHAPE_COLUMNS = [
    "area_um2",
    "perimeter_um",
    "eccentricity",
    "solidity",
    "circularity",
    "major_axis_um",
    "minor_axis_um",
]
#: Stain measurements of the cell table (optical density inside the cell).
STAIN_COLUMNS = ["hematoxylin_mean", "hematoxylin_std", "eosin_mean", "eosin_std"]

CELL_COLUMNS = [
    "cell_id",
    "slide_id",
    "tile_id",
    "centroid_x",
    "centroid_y",
    "bbox_x0",
    "bbox_y0",
    "bbox_x1",
    "bbox_y1",
    "polygon",
    *SHAPE_COLUMNS,
    *STAIN_COLUMNS,
    "segmenter",
    "score",
]


def empty_cells() -> pd.DataFrame:
    """A cell table with no rows and the contract's columns."""
    return pd.DataFrame({column: pd.Series(dtype=_DTYPES.get(column, "float64")) for column in CELL_COLUMNS})


_DTYPES = {
    "cell_id": "object",
    "slide_id": "object",
    "tile_id": "object",
    "polygon": "object",
    "segmenter": "object",
}


def outline(mask: np.ndarray) -> np.ndarray:
    """Closed outline (row, col) of a binary object, on pixel edges, in its own frame
    (continuous coordinates: pixel ``(r, c)`` covers ``[r, r + 1] × [c, c + 1]``)."""
    from skimage.measure import find_contours

    padded = np.pad(mask, 1)
    contours = find_contours(padded.astype(np.float32), 0.5)
    # find_contours puts pixel centres on integers; -1 undoes the padding and +0.5 moves
    # to continuous coordinates (pixel i spans [i, i + 1]), as used by to_level0.
    return max(contours, key=len) - 0.5


def _sums(labels: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(labels.ravel(), weights=None if weights is None else weights.ravel(), minlength=n + 1)


@dataclass(frozen=True)
class ObjectMoments:
    """Pixel count, centroid and central second moments of every object of a label map,
    indexed by label id (index 0 is the background). Computed once per tile and shared by
    stitching (which objects the tile owns) and the measurements."""

    area: np.ndarray
    mean_r: np.ndarray
    mean_c: np.ndarray
    var_r: np.ndarray
    var_c: np.ndarray
    cov: np.ndarray

    @property
    def n(self) -> int:
        """The largest label id covered."""
        return len(self.area) - 1


def object_moments(labels: np.ndarray) -> ObjectMoments:
    """:class:`ObjectMoments` of ``labels`` (``bincount`` over the image, all objects at
    once). Centroids are in pixel-index units (pixel ``(r, c)``'s centre is ``(r, c)``)."""
    n = int(labels.max()) if labels.size else 0
    rows, cols = np.indices(labels.shape, dtype=np.float64)
    area = _sums(labels, n)
    safe = np.maximum(area, 1)
    mean_r = _sums(labels, n, rows) / safe
    mean_c = _sums(labels, n, cols) / safe
    # Central second moments (pixel variance 1/12 added, as for continuous squares).
    var_r = _sums(labels, n, rows**2) / safe - mean_r**2 + 1 / 12
    var_c = _sums(labels, n, cols**2) / safe - mean_c**2 + 1 / 12
    cov = _sums(labels, n, rows * cols) / safe - mean_r * mean_c
    return ObjectMoments(area, mean_r, mean_c, var_r, var_c, cov)


def measure_cells(
    labels: np.ndarray,
    rgb: np.ndarray,
    tile: dict,
    segmenter: str,
    score_map: np.ndarray | None = None,
    moments: ObjectMoments | None = None,
) -> pd.DataFrame:
    """Cell-table rows for every object of ``labels`` (a stitched tile label map); see
    :func:`measure_objects`."""
    return measure_objects(labels, rgb, tile, segmenter, score_map, moments)[CELL_COLUMNS]


def measure_objects(
    labels: np.ndarray,
    rgb: np.ndarray,
    tile: dict,
    segmenter: str,
    score_map: np.ndarray | None = None,
    moments: ObjectMoments | None = None,
) -> pd.DataFrame:
    """The cell-table columns plus ``label``, the object's value in ``labels`` (to join
    measurements with per-instance ground truth and per-cell pixel features).

    Area, centroid, second moments and stain statistics are computed for all objects at
    once (``bincount``); ``moments`` computed before stitching on the same ids are reused
    instead. Perimeter, solidity and circularity come from the outline polygon
    (pixel-edge outline, simplified by a quarter pixel), so they are consistent with the
    polygon people see. ``score`` is the mean of ``score_map`` (the segmenter's per-pixel
    confidence, e.g. the network's nucleus probability) over the object, or NaN when the
    segmenter gives none.
    """
    from scipy import ndimage as ndi

    ids = np.unique(labels)
    ids = ids[ids > 0]
    if len(ids) == 0:
        return empty_cells().assign(label=pd.Series(dtype="int64"))
    n = int(labels.max())
    m = moments if moments is not None and moments.n >= n else object_moments(labels)
    area, mean_r, mean_c = m.area, m.mean_r, m.mean_c
    half_trace, root = (m.var_r + m.var_c) / 2, np.sqrt(((m.var_r - m.var_c) / 2) ** 2 + m.cov**2)
    major_var, minor_var = half_trace + root, np.maximum(half_trace - root, 0)
    stains = stain_densities(rgb)
    h, e = stains[..., 0].astype(np.float64), stains[..., 1].astype(np.float64)
    count = np.maximum(_sums(labels, n), 1)
    h_mean = _sums(labels, n, h) / count
    e_mean = _sums(labels, n, e) / count
    h_std = np.sqrt(np.maximum(_sums(labels, n, h**2) / count - h_mean**2, 0))
    e_std = np.sqrt(np.maximum(_sums(labels, n, e**2) / count - e_mean**2, 0))
    score = (
        _sums(labels, n, np.asarray(score_map, dtype=np.float64)) / count
        if score_map is not None
        else np.full(n + 1, np.nan)
    )

    sx, sy = tile_scale(tile)
    mpp_x, mpp_y = float(tile["out_mpp_x"]), float(tile["out_mpp_y"])
    mpp = (mpp_x * mpp_y) ** 0.5
    level0_um = mpp / ((sx * sy) ** 0.5)  # µm per level-0 pixel
    boxes = ndi.find_objects(labels)
    polygons = []
    for i in ids:
        box = boxes[i - 1]
        contour = outline(labels[box] == i)
        px, py = to_level0(tile, contour[:, 1] + box[1].start, contour[:, 0] + box[0].start)
        polygons.append(Polygon(np.column_stack([px, py])))
    polygons = shapely.simplify(np.array(polygons, dtype=object), 0.25 * min(sx, sy))
    invalid = ~shapely.is_valid(polygons)
    if invalid.any():
        polygons[invalid] = [shapely.make_valid(p).buffer(0) for p in polygons[invalid]]
    poly_area = shapely.area(polygons)
    perimeter = shapely.length(polygons)
    hull_area = shapely.area(shapely.convex_hull(polygons))
    cx, cy = to_level0(tile, mean_c[ids] + 0.5, mean_r[ids] + 0.5)

    order = np.lexsort((np.round(mean_c[ids], 3), np.round(mean_r[ids], 3)))
    frame = pd.DataFrame(
        {
            "slide_id": tile["slide_id"],
            "tile_id": tile["tile_id"],
            "centroid_x": cx,
            "centroid_y": cy,
            "bbox_x0": [float(tile["x"] + boxes[i - 1][1].start * sx) for i in ids],
            "bbox_y0": [float(tile["y"] + boxes[i - 1][0].start * sy) for i in ids],
            "bbox_x1": [float(tile["x"] + boxes[i - 1][1].stop * sx) for i in ids],
            "bbox_y1": [float(tile["y"] + boxes[i - 1][0].stop * sy) for i in ids],
            "polygon": shapely.to_wkb(polygons),
            "area_um2": area[ids] * mpp_x * mpp_y,
            "perimeter_um": perimeter * level0_um,
            "eccentricity": np.sqrt(1 - minor_var[ids] / np.maximum(major_var[ids], 1e-12)),
            "solidity": np.divide(poly_area, hull_area, out=np.ones_like(poly_area), where=hull_area > 0),
            "circularity": np.divide(
                4 * np.pi * poly_area, perimeter**2, out=np.zeros_like(poly_area), where=perimeter > 0
            ),
            "major_axis_um": 4 * np.sqrt(major_var[ids]) * mpp,
            "minor_axis_um": 4 * np.sqrt(minor_var[ids]) * mpp,
            "hematoxylin_mean": h_mean[ids],
            "hematoxylin_std": h_std[ids],
            "eosin_mean": e_mean[ids],
            "eosin_std": e_std[ids],
            "segmenter": segmenter,
            "score": score[ids],
        }
    ).iloc[order]
    frame.insert(0, "cell_id", [f"{tile['tile_id']}_n{k:04d}" for k in range(len(frame))])
    frame["label"] = ids[order]
    return frame.reset_index(drop=True)[[*CELL_COLUMNS, "label"]]
