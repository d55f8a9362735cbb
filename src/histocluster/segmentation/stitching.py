"""Every cell exactly once across overlapping tiles.

A tile's label map holds whole cells and cells cut by its border. A cell is kept by a
tile when

* its centroid, in level-0 pixels, lies in the tile's core box (core boxes partition
  the slide, see :mod:`histocluster.wsi.tile_grid`), and
* it does not touch a tile side that has a neighbour (an *inner* side): such an object
  is cut, and the neighbour whose core holds its centroid sees it whole, because tiles
  overlap by more than the largest cell. Sides on the slide's edge are not inner: a cell
  cut by the edge of the scan is all there is of it.
"""

from __future__ import annotations

import logging

import numpy as np

from histocluster.wsi.tile_grid import to_level0

logger = logging.getLogger(__name__)


def inner_sides(tile: dict, slide_width: int, slide_height: int) -> dict[str, bool]:
    """Which sides of the tile face a neighbour rather than the slide's edge."""
    return {
        "left": tile["x"] > 0,
        "top": tile["y"] > 0,
        "right": tile["x"] + tile["w"] < slide_width,
        "bottom": tile["y"] + tile["h"] < slide_height,
    }


def owned_labels(
    labels: np.ndarray,
    tile: dict,
    slide_width: int,
    slide_height: int,
    centres: np.ndarray | None = None,
) -> np.ndarray:
    """Label ids (sorted) of the objects this tile keeps. ``centres`` (row, col) per label
    id, index 0 the background, as the measurements compute them
    (:func:`~histocluster.segmentation.measurements.object_moments`); computed here when
    not given."""
    from scipy import ndimage as ndi

    ids = np.unique(labels)
    ids = ids[ids > 0]
    if len(ids) == 0:
        return ids
    if centres is None:
        centres = np.array(ndi.center_of_mass(np.ones_like(labels), labels, ids)).reshape(-1, 2)
    else:
        centres = np.asarray(centres)[ids]
    x, y = to_level0(tile, centres[:, 1] + 0.5, centres[:, 0] + 0.5)
    in_core = (x >= tile["core_x0"]) & (x < tile["core_x1"]) & (y >= tile["core_y0"]) & (y < tile["core_y1"])
    sides = inner_sides(tile, slide_width, slide_height)
    cut = set()
    for side, edge in (
        ("left", labels[:, 0]),
        ("right", labels[:, -1]),
        ("top", labels[0, :]),
        ("bottom", labels[-1, :]),
    ):
        if sides[side]:
            cut.update(int(v) for v in np.unique(edge) if v > 0)
    not_cut = np.array([int(i) not in cut for i in ids], dtype=bool)
    lost = int((in_core & ~not_cut).sum())
    if lost:
        logger.warning(
            "Tile %s: %d object(s) centred in its core touch an inner border: larger than half "
            "the tile overlap, so no tile sees them whole; increase tiling.overlap",
            tile.get("tile_id", "?"),
            lost,
        )
    return ids[in_core & not_cut]


def stitch(
    labels: np.ndarray, tile: dict, slide_width: int, slide_height: int, centres: np.ndarray | None = None
) -> np.ndarray:
    """``labels`` with every object this tile does not own set to 0 (``centres``: see
    :func:`owned_labels`)."""
    keep = np.zeros(int(labels.max()) + 1, dtype=bool)
    keep[owned_labels(labels, tile, slide_width, slide_height, centres)] = True
    return np.where(keep[labels], labels, 0)
