"""The per-slide viewer JSON (upstream's post-processing shape), written as a stream."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely


def outlines(polygons: np.ndarray) -> list[list[list[float]]]:
    """The exterior ring (of the largest part) of each WKB polygon as [[x, y], ...],
    2 decimals: one vectorised parse and one coordinate extraction for all of them."""
    geometries = shapely.from_wkb(polygons)
    multi = shapely.get_type_id(geometries) != 3  # 3 = Polygon
    if multi.any():
        geometries[multi] = [max(g.geoms, key=lambda part: part.area) for g in geometries[multi]]
    coords, index = shapely.get_coordinates(shapely.get_exterior_ring(geometries), return_index=True)
    coords = np.round(coords, 2)
    bounds = np.searchsorted(index, np.arange(len(geometries) + 1))
    return [coords[bounds[k] : bounds[k + 1]].tolist() for k in range(len(geometries))]


@dataclass
class StreamedJSON:
    """A JSON object written piece by piece: ``header``'s keys, then ``list_key`` holding
    ``items`` one at a time (see :class:`histocluster.datasets.StreamedJSONDataset`)."""

    header: dict
    list_key: str
    items: Iterable[dict]

    def as_dict(self) -> dict:
        return {**self.header, self.list_key: list(self.items)}


def _viewer_tiles(tiles: pd.DataFrame, table: pd.DataFrame) -> Iterator[dict]:
    for tile_id, cells in table.groupby("tile_id", sort=True):
        tile = tiles.loc[tile_id]
        rings = outlines(cells["polygon"].to_numpy())
        centroids = np.round(cells[["centroid_x", "centroid_y"]].to_numpy(dtype=np.float64), 2).tolist()
        boxes = cells[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].to_numpy(dtype=np.float64).tolist()
        yield {
            "tile_id": tile_id,
            "x": int(tile["x"]),
            "y": int(tile["y"]),
            "w": int(tile["w"]),
            "h": int(tile["h"]),
            "cells": [
                {
                    "cell_id": cell_id,
                    "polygon": ring,
                    "centroid": centroid,
                    "bbox": box,
                    "pred_class": label,
                    "cluster_id": int(cluster_id),
                    "cluster_confidence": round(float(cluster_confidence), 4),
                    "label_confidence": round(float(label_confidence), 4),
                }
                for cell_id, ring, centroid, box, label, cluster_id, cluster_confidence, label_confidence in zip(
                    cells["cell_id"],
                    rings,
                    centroids,
                    boxes,
                    cells["label"],
                    cells["cluster_id"],
                    cells["cluster_confidence"],
                    cells["label_confidence"],
                    strict=True,
                )
            ],
        }


def viewer_json(slide: pd.Series, tiles: pd.DataFrame, table: pd.DataFrame) -> StreamedJSON:
    """Upstream's post-processing shape (tiles with their cells: polygon, pred_class,
    cluster_id, cluster_confidence, bbox), in level-0 pixels with the slide's µm/px;
    tiles are produced one at a time as the file is written."""
    header = {
        "slide_id": slide.name,
        "path": str(slide["path"]),
        "width": int(slide["width"]),
        "height": int(slide["height"]),
        "mpp_x": float(slide["mpp_x"]),
        "mpp_y": float(slide["mpp_y"]),
        "coordinates": "level-0 pixels of the slide",
    }
    return StreamedJSON(header, "tiles", _viewer_tiles(tiles, table))
