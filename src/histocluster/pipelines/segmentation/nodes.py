"""Nodes of the ``segmentation`` pipeline: every cell of every kept tile, stitched."""

from __future__ import annotations

import logging
from functools import partial

import pandas as pd
from tqdm.auto import tqdm

from histocluster.cell_measurements import CELL_COLUMNS, empty_cells, measure_cells
from histocluster.params import SegmentationParams
from histocluster.segmenters.watershed import segment_nuclei
from histocluster.slides import open_slide
from histocluster.stitching import stitch
from histocluster.tiling import read_tile

logger = logging.getLogger(__name__)


def _segmenter(params: SegmentationParams):
    return partial(segment_nuclei, settings=params.watershed)


def segment_cells(
    slides: pd.DataFrame, tiles: pd.DataFrame, tile_quality: pd.DataFrame, params: SegmentationParams
) -> pd.DataFrame:
    """The cell table: segment every kept tile at its tiling resolution, keep the cells
    each tile owns (core box, not cut) and measure them in level-0 / physical units.

    A tile that fails is logged and skipped; a slide whose tiles all fail is reported
    and the other slides go on. Tiles without cells give no rows.
    """
    segment = _segmenter(params)
    kept = tiles.merge(tile_quality.loc[tile_quality["keep"], ["tile_id"]], on="tile_id")
    slides_by_id = slides.set_index("slide_id")
    frames = [empty_cells()]
    found = 0
    with tqdm(total=len(kept), desc="Segmenting", unit="tile") as progress:
        for slide_id, slide_tiles in kept.groupby("slide_id", sort=False):
            slide = slides_by_id.loc[slide_id]
            failures = slide_cells = 0
            try:
                with open_slide(slide["path"]) as reader:
                    for tile in slide_tiles.to_dict("records"):
                        try:
                            rgb = read_tile(reader, tile)
                            mpp = (tile["out_mpp_x"] * tile["out_mpp_y"]) ** 0.5
                            labels = stitch(
                                segment(rgb, mpp), tile, int(slide["width"]), int(slide["height"])
                            )
                            cells = measure_cells(labels, rgb, tile, params.segmenter)
                        except Exception as exc:  # one bad tile must not cost the slide
                            failures += 1
                            logger.error("Tile %s: segmentation failed (%s)", tile["tile_id"], exc)
                            continue
                        finally:
                            progress.update(1)
                        frames.append(cells)
                        slide_cells += len(cells)
                        found += len(cells)
                        progress.set_postfix(slide=slide_id, cells=found)
            except Exception as exc:
                logger.error("Slide %s: cannot be read for segmentation (%s); skipped", slide_id, exc)
                continue
            if failures == len(slide_tiles):
                logger.error("Slide %s: all %d tiles failed; no cells", slide_id, failures)
            else:
                logger.info(
                    "Slide %s: %d cells in %d tiles (%d failed)",
                    slide_id,
                    slide_cells,
                    len(slide_tiles),
                    failures,
                )
    cells = pd.concat([f for f in frames if len(f)] or frames, ignore_index=True)
    return cells[CELL_COLUMNS]
