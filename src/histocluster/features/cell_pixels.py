"""Crops of cells: from a tile already in memory (:class:`TileCells`, the segmentation
pass's ResNet crops) or read on their own around a few cells of the cell table
(:func:`cell_crops_by_id`: the clusters' representatives), the cell outlined or its
background painted over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np
import pandas as pd
import shapely

from histocluster.wsi.slides import SlideReader, open_slide
from histocluster.wsi.tile_grid import read_with_margin, tile_mpp, tile_scale

logger = logging.getLogger(__name__)

#: Colour of the outline that marks which cell a crop is about.
OUTLINE = (0, 255, 0)


@dataclass
class TileCells:
    """One tile's pixels and the cells it owns.

    ``rgb`` covers the tile plus a margin on every side (white beyond the slide's edge);
    ``labels`` has the same frame, cell ``k`` of ``rows`` drawn with value ``k + 1``;
    ``centres`` are the cells' centroids (x, y) in that frame, continuous coordinates
    (pixel ``i`` spans ``[i, i + 1]``).
    """

    tile: dict
    rgb: np.ndarray
    labels: np.ndarray
    rows: np.ndarray  # positions of the cells in the cell table
    centres: np.ndarray

    @property
    def mpp(self) -> float:
        return tile_mpp(self.tile)


def to_tile_frame(tile: dict, x: np.ndarray, y: np.ndarray, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Continuous tile coordinates (pixel ``i`` spans ``[i, i + 1]``) of level-0 points."""
    sx, sy = tile_scale(tile)
    return (np.asarray(x) - tile["x"]) / sx + margin, (np.asarray(y) - tile["y"]) / sy + margin


def rasterise(polygons: np.ndarray, tile: dict, shape: tuple[int, int], margin: int = 0) -> np.ndarray:
    """Label map (int32) of level-0 ``polygons`` (shapely) in the tile's pixel frame:
    a pixel belongs to polygon ``k`` (value ``k + 1``) when its centre lies inside."""
    from skimage.draw import polygon as fill_polygon

    labels = np.zeros(shape, dtype=np.int32)
    for k, geometry in enumerate(polygons):
        for part in getattr(geometry, "geoms", [geometry]):
            x, y = np.asarray(part.exterior.coords).T
            cols, rows = to_tile_frame(tile, x, y, margin)
            rr, cc = fill_polygon(rows - 0.5, cols - 0.5, shape)
            labels[rr, cc] = k + 1
    return labels


def _slides_of(
    slides: pd.DataFrame, cells: pd.DataFrame
) -> Iterator[tuple[str, pd.DataFrame, SlideReader | str]]:
    """(slide_id, its cells, an open reader — or the error that stopped it opening)."""
    paths = slides.set_index("slide_id")["path"]
    for slide_id, slide_cells in cells.groupby("slide_id", sort=False):
        try:
            reader: SlideReader | str = open_slide(paths.loc[slide_id])
        except Exception as exc:
            reader = f"{type(exc).__name__}: {exc}"
        yield slide_id, slide_cells, reader


def crop_cells(
    item: TileCells,
    crop_px: int,
    size: int,
    cells: range | None = None,
    fill: tuple[int, int, int] | None = None,
    outline: tuple[int, int, int] | None = None,
    outline_width: int = 1,
    smooth_enlarge: bool = False,
) -> np.ndarray:
    """``size`` × ``size`` RGB crops (uint8) of ``crop_px`` tile pixels centred on the
    centroids of a tile's cells (``cells``: positions in ``item``, all by default).

    ``fill`` paints everything outside the cell that colour; ``outline`` draws the cell's
    outline in that colour (one pixel of the output), so a viewer knows which cell is
    meant. ``item`` must have been read with a margin of at least half a crop."""
    cells = range(len(item.rows)) if cells is None else cells
    crops = np.empty((len(cells), size, size, 3), dtype=np.uint8)
    half = crop_px / 2
    for i, k in enumerate(cells):
        cx, cy = item.centres[k]
        x0, y0 = int(round(cx - half)), int(round(cy - half))
        window = item.rgb[y0 : y0 + crop_px, x0 : x0 + crop_px]
        mine = item.labels[y0 : y0 + crop_px, x0 : x0 + crop_px] == k + 1
        if fill is not None:
            window = np.where(mine[..., None], window, np.array(fill, np.uint8))
        enlarge = smooth_enlarge and size > crop_px
        crop = cv2.resize(
            np.ascontiguousarray(window),
            (size, size),
            interpolation=cv2.INTER_CUBIC if enlarge else cv2.INTER_AREA,
        )
        if outline is not None and mine.any():
            if enlarge:  # a smooth edge, not the staircase of enlarged pixels
                soft = cv2.resize(mine.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
                mask = (soft >= 0.5).astype(np.uint8)
            else:
                mask = cv2.resize(mine.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(
                crop, contours, -1, outline, outline_width, lineType=cv2.LINE_AA if enlarge else 8
            )
        crops[i] = crop
    return crops


def cell_crops_by_id(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    cells: pd.DataFrame,
    crop_um: float,
    size: int | None,
    outline: tuple[int, int, int] | None = OUTLINE,
    finest: bool = False,
    max_px: int = 256,
    outline_width: int = 1,
    smooth_enlarge: bool = False,
    lazy: bool = False,
) -> dict[str, np.ndarray] | dict[str, Callable[[], np.ndarray]]:
    """Crops of a few cells by cell_id: a ``crop_um`` square centred on each, read on its
    own at its tile's resolution (``finest``: at the slide's level-0 µm/px, or coarser
    where that would exceed ``max_px``) (white beyond the slide), resized to ``size`` px
    (None: as read), the cell outlined (green by default). For galleries and the model,
    where reading whole tiles for ten cells would waste most of the reading. Cells whose
    slide or pixels cannot be read are logged and left out.

    ``lazy``: every cell is still read here, in reading order, but only its pixels as read
    are kept; each value is a function that makes the crop (outline, enlargement) when
    called — 2,000 gallery crops of 256 px read at 128 px hold ~100 MB instead of ~400."""
    cells = cells.reset_index(drop=True)
    tiles_by_id = tiles.set_index("tile_id")
    crops: dict[str, np.ndarray] = {}
    for slide_id, slide_cells, reader in _slides_of(slides, cells):
        if isinstance(reader, str):
            logger.error(
                "Slide %s: cannot be read (%s); %d cells not shown", slide_id, reader, len(slide_cells)
            )
            continue
        # In bands across the slide, so that neighbours are read one after the other and the
        # reader's cache of decoded JPEG tiles serves them (cluster order jumps all over it).
        band = (slide_cells["centroid_y"] // 1024).to_numpy()
        ordered = slide_cells.assign(_band=band).sort_values(["_band", "centroid_x"], kind="stable")
        with reader:
            for row in ordered.itertuples():
                tile = tiles_by_id.loc[row.tile_id]
                sx, sy = tile_scale(tile)
                mpp_x, mpp_y = tile["out_mpp_x"], tile["out_mpp_y"]
                if finest:  # level 0 has the tile's µm/px divided by its scale
                    level0 = float(np.sqrt(mpp_x * mpp_y / (sx * sy)))
                    factor = max(level0, crop_um / max_px) / tile_mpp(tile)
                    sx, sy, mpp_x, mpp_y = sx * factor, sy * factor, mpp_x * factor, mpp_y * factor
                crop_px = max(2, int(round(crop_um / float(np.sqrt(mpp_x * mpp_y)))))
                box = {
                    "tile_id": row.tile_id,
                    "x": row.centroid_x - crop_px / 2 * sx,
                    "y": row.centroid_y - crop_px / 2 * sy,
                    "w": crop_px * sx,
                    "h": crop_px * sy,
                    "out_w": crop_px,
                    "out_h": crop_px,
                    "out_mpp_x": mpp_x,
                    "out_mpp_y": mpp_y,
                }
                try:
                    rgb = read_with_margin(reader, box, 0)
                except Exception as exc:
                    logger.error(
                        "Cell %s: cannot be read (%s: %s); not shown", row.cell_id, type(exc).__name__, exc
                    )
                    continue
                make = partial(
                    _outlined_crop,
                    box,
                    rgb,
                    row.polygon,
                    row.Index,
                    crop_px,
                    size or crop_px,
                    outline,
                    outline_width,
                    smooth_enlarge,
                )
                crops[row.cell_id] = make if lazy else make()
    return crops


def _outlined_crop(
    box: dict,
    rgb: np.ndarray,
    polygon: bytes,
    row: int,
    crop_px: int,
    size: int,
    outline: tuple[int, int, int] | None,
    outline_width: int,
    smooth_enlarge: bool,
) -> np.ndarray:
    """One cell's crop from the pixels read around it (``rgb``, ``box``) and its outline
    (``polygon``, WKB): what :func:`cell_crops_by_id` returns for it."""
    labels = rasterise(shapely.from_wkb([polygon]), box, rgb.shape[:2])
    item = TileCells(box, rgb, labels, np.array([row]), np.array([[crop_px / 2, crop_px / 2]]))
    return crop_cells(
        item, crop_px, size, outline=outline, outline_width=outline_width, smooth_enlarge=smooth_enlarge
    )[0]
