"""Tile grids at a physical resolution, with core boxes for stitching.

A tile is ``tile_size`` output pixels square at ``target_mpp`` µm/px. Its footprint on
the slide, in level-0 pixels, is ``tile_size * target_mpp / slide_mpp``; tiles step by
``tile_size - overlap`` output pixels, so neighbours share ``overlap`` pixels.

Every tile carries a *core box*: the tile minus half the overlap on each side that has
a neighbour in the grid. Core boxes of a grid partition the slide, so a cell belongs to
exactly one tile: the one whose core box holds its centroid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from histocluster.wsi.slides import SlideReader

#: Columns of the tile table (the "tiles" contract of docs/architecture.md).
TILE_COLUMNS = [
    "slide_id",
    "tile_id",
    "target_mpp",
    "row",
    "col",
    "x",
    "y",
    "w",
    "h",
    "read_level",
    "out_w",
    "out_h",
    "out_mpp_x",
    "out_mpp_y",
    "tissue_fraction",
    "core_x0",
    "core_y0",
    "core_x1",
    "core_y1",
    "region",
]


@dataclass(frozen=True)
class GridSpec:
    """Tile size and overlap in output pixels, at ``target_mpp`` µm/px."""

    target_mpp: float
    tile_size: int = 512
    overlap: int = 64

    def __post_init__(self) -> None:
        if self.tile_size <= 0:
            raise ValueError(f"tile_size must be positive, got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size:
            raise ValueError(
                f"overlap must be in [0, tile_size), got {self.overlap} for tile_size {self.tile_size}"
            )
        if self.target_mpp <= 0:
            raise ValueError(f"target_mpp must be positive, got {self.target_mpp}")


def mpp_tag(mpp: float) -> str:
    """A short, file-name-safe tag of a resolution: 0.5 → '0.5mpp'."""
    return f"{mpp:g}mpp"


def tile_id(slide_id: str, mpp: float, row: int, col: int) -> str:
    """Stable, readable tile id, e.g. ``cmu-1-small-region_0.5mpp_r002_c013``."""
    return f"{slide_id}_{mpp_tag(mpp)}_r{row:03d}_c{col:03d}"


def _axis(length: int, footprint: int, stride: int) -> np.ndarray:
    """Tile origins along one axis so that the tiles cover ``[0, length)``."""
    if length <= footprint:
        return np.zeros(1, dtype=np.int64)
    count = math.ceil((length - footprint) / stride) + 1
    return np.arange(count, dtype=np.int64) * stride


def _core_bounds(origins: np.ndarray, footprint: int, half_overlap: int, length: int):
    """Core interval of every tile along one axis; the outer sides reach the slide edge."""
    low = origins + half_overlap
    high = origins + footprint - half_overlap
    low[0] = 0
    high[-1] = max(length, int(origins[-1] + footprint))
    # Make neighbouring cores meet exactly even when rounding left a one-pixel seam.
    if len(origins) > 1:
        high[:-1] = low[1:]
    return low, high


def plan_grid(
    slide_id: str, width: int, height: int, mpp: tuple[float, float], spec: GridSpec
) -> pd.DataFrame:
    """Every tile of the grid over a ``width`` × ``height`` level-0 slide.

    Tiles at the right and bottom edges may reach past the slide; their pixels there
    read as white. Tissue fraction, read level and region are filled in later.
    """
    mpp_x, mpp_y = mpp
    foot_w = max(1, round(spec.tile_size * spec.target_mpp / mpp_x))
    foot_h = max(1, round(spec.tile_size * spec.target_mpp / mpp_y))
    stride_w = max(1, round((spec.tile_size - spec.overlap) * spec.target_mpp / mpp_x))
    stride_h = max(1, round((spec.tile_size - spec.overlap) * spec.target_mpp / mpp_y))
    xs = _axis(width, foot_w, stride_w)
    ys = _axis(height, foot_h, stride_h)
    cx0, cx1 = _core_bounds(xs.copy(), foot_w, (foot_w - stride_w) // 2, width)
    cy0, cy1 = _core_bounds(ys.copy(), foot_h, (foot_h - stride_h) // 2, height)
    rows, cols = np.meshgrid(np.arange(len(ys)), np.arange(len(xs)), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    frame = pd.DataFrame(
        {
            "slide_id": slide_id,
            "tile_id": [tile_id(slide_id, spec.target_mpp, r, c) for r, c in zip(rows, cols, strict=True)],
            "target_mpp": float(spec.target_mpp),
            "row": rows.astype(np.int32),
            "col": cols.astype(np.int32),
            "x": xs[cols],
            "y": ys[rows],
            "w": np.int64(foot_w),
            "h": np.int64(foot_h),
            "read_level": np.int32(0),
            "out_w": np.int32(spec.tile_size),
            "out_h": np.int32(spec.tile_size),
            "out_mpp_x": foot_w * mpp_x / spec.tile_size,
            "out_mpp_y": foot_h * mpp_y / spec.tile_size,
            "tissue_fraction": np.nan,
            "core_x0": cx0[cols],
            "core_y0": cy0[rows],
            "core_x1": cx1[cols],
            "core_y1": cy1[rows],
            "region": None,
        }
    )
    return frame[TILE_COLUMNS]


def mask_fraction(mask: np.ndarray, scale: tuple[float, float], boxes: np.ndarray) -> np.ndarray:
    """Fraction of ``mask`` inside each level-0 box ``(x, y, w, h)``.

    ``scale`` is level-0 pixels per mask pixel (x, y). Uses a summed-area table, so
    the cost is one pass over the mask plus O(1) per box. Parts of a box outside the
    mask count as background.
    """
    if len(boxes) == 0:
        return np.zeros(0)
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.int64), axis=0), axis=1)
    sx, sy = scale
    x0 = np.floor(boxes[:, 0] / sx).astype(np.int64)
    y0 = np.floor(boxes[:, 1] / sy).astype(np.int64)
    x1 = np.ceil((boxes[:, 0] + boxes[:, 2]) / sx).astype(np.int64)
    y1 = np.ceil((boxes[:, 1] + boxes[:, 3]) / sy).astype(np.int64)
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    cx0, cx1 = np.clip(x0, 0, mask.shape[1]), np.clip(x1, 0, mask.shape[1])
    cy0, cy1 = np.clip(y0, 0, mask.shape[0]), np.clip(y1, 0, mask.shape[0])
    inside = integral[cy1, cx1] - integral[cy0, cx1] - integral[cy1, cx0] + integral[cy0, cx0]
    return inside / area


def sample_uniform(points: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` points spread evenly over space (farthest-point sampling).

    Deterministic: starts from the point nearest the centroid, then repeatedly takes
    the point farthest from those already chosen. Returns indices in ascending order.
    """
    n = len(points)
    if count >= n:
        return np.arange(n)
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    points = points.astype(np.float64)
    chosen = np.empty(count, dtype=np.int64)
    chosen[0] = int(np.argmin(((points - points.mean(axis=0)) ** 2).sum(axis=1)))
    distance = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    for i in range(1, count):
        chosen[i] = int(np.argmax(distance))
        distance = np.minimum(distance, ((points - points[chosen[i]]) ** 2).sum(axis=1))
    return np.sort(chosen)


def read_tile(reader: SlideReader, tile: pd.Series | dict) -> np.ndarray:
    """Pixels of one tile row as an ``out_h`` × ``out_w`` × 3 uint8 array."""
    box = (int(tile["x"]), int(tile["y"]), int(tile["w"]), int(tile["h"]))
    return reader.read_scaled(box, (int(tile["out_w"]), int(tile["out_h"])))


def on_slide_size(tile: pd.Series | dict, dimensions: tuple[int, int]) -> tuple[int, int]:
    """Width and height, in tile pixels from the tile's top-left corner, of the part of the
    tile that lies on the slide: a tile at the slide's right or bottom edge reaches past it,
    and :func:`read_tile` fills that part with white."""
    sx, sy = tile_scale(tile)
    width, height = dimensions
    w = min(int(tile["out_w"]), int(np.ceil((width - tile["x"]) / sx)))
    h = min(int(tile["out_h"]), int(np.ceil((height - tile["y"]) / sy)))
    return max(w, 1), max(h, 1)


def read_tile_on_slide(reader: SlideReader, tile: pd.Series | dict) -> np.ndarray:
    """:func:`read_tile` without what lies past the slide's right and bottom edges, for
    pictures (the tile's top-left pixel, and so every coordinate in it, is unchanged)."""
    w, h = on_slide_size(tile, reader.dimensions)
    return read_tile(reader, tile)[:h, :w]


def tile_scale(tile: dict) -> tuple[float, float]:
    """Level-0 pixels per tile pixel (x, y)."""
    return tile["w"] / tile["out_w"], tile["h"] / tile["out_h"]


def tile_mpp(tile: dict) -> float:
    """µm per pixel of the tile as read (geometric mean of x and y)."""
    return float(np.sqrt(tile["out_mpp_x"] * tile["out_mpp_y"]))


def to_level0(tile: dict, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 coordinates of continuous tile coordinates (pixel centres at +0.5)."""
    sx, sy = tile_scale(tile)
    return tile["x"] + np.asarray(cols) * sx, tile["y"] + np.asarray(rows) * sy


def read_with_margin(reader: SlideReader, tile: dict, margin: int) -> np.ndarray:
    """The tile's pixels with ``margin`` output pixels added on every side; parts
    beyond the slide are white (glass). The tile itself holds exactly what
    :func:`read_tile` reads (a resampled read of the larger box differs by interpolation,
    and a network feature asked for must not change what is segmented)."""
    sx, sy = tile_scale(tile)
    out_w, out_h = int(tile["out_w"]) + 2 * margin, int(tile["out_h"]) + 2 * margin
    x0, y0 = tile["x"] - margin * sx, tile["y"] - margin * sy
    width, height = reader.dimensions
    # The part of the padded box inside the slide, in whole output pixels.
    left = int(np.ceil(max(0.0, -x0) / sx))
    top = int(np.ceil(max(0.0, -y0) / sy))
    right = out_w - int(np.ceil(max(0.0, x0 + out_w * sx - width) / sx))
    bottom = out_h - int(np.ceil(max(0.0, y0 + out_h * sy - height) / sy))
    rgb = np.full((out_h, out_w, 3), 255, dtype=np.uint8)
    if right > left and bottom > top:
        box = (
            round(x0 + left * sx),
            round(y0 + top * sy),
            max(1, round((right - left) * sx)),
            max(1, round((bottom - top) * sy)),
        )
        rgb[top:bottom, left:right] = reader.read_scaled(box, (right - left, bottom - top))
    if margin and (sx, sy) != (1.0, 1.0):
        rgb[margin : margin + int(tile["out_h"]), margin : margin + int(tile["out_w"])] = read_tile(
            reader, tile
        )
    return rgb
