"""Nodes of the ``segmentation`` pipeline: every cell of every kept tile, stitched."""

from __future__ import annotations

import logging
import zlib

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from histocluster.datasets.label_mask import label_dtype
from histocluster.errors import UserInputError
from histocluster.params import SegmentationParams
from histocluster.segmentation.measurements import CELL_COLUMNS, empty_cells, measure_cells
from histocluster.segmentation.segmenter import Segmenter
from histocluster.segmentation.stitching import stitch
from histocluster.wsi.slides import open_slide
from histocluster.wsi.tile_grid import read_tile

logger = logging.getLogger(__name__)


class SegmentationFailedError(UserInputError):
    """No slide could be segmented; the message lists each slide's error."""


def _batches(records: list[dict], size: int):
    """Consecutive batches of tiles that share one resolution (one segmenter call each)."""
    batch: list[dict] = []
    for record in records:
        if batch and (len(batch) == size or record["target_mpp"] != batch[0]["target_mpp"]):
            yield batch
            batch = []
        batch.append(record)
    if batch:
        yield batch


class _CompressedLabels:
    """A label map kept zlib-compressed until the catalog saves it (lazy partition)."""

    def __init__(self, labels: np.ndarray) -> None:
        self.shape, self.dtype = labels.shape, label_dtype(labels)
        self.blob = zlib.compress(labels.astype(self.dtype).tobytes(), 1)

    def __call__(self) -> np.ndarray:
        return np.frombuffer(zlib.decompress(self.blob), dtype=self.dtype).reshape(self.shape)


def _segment_slide(
    slide: pd.Series,
    tiles: pd.DataFrame,
    segmenter: Segmenter,
    params: SegmentationParams,
    progress: tqdm,
    found: int,
    masks: dict,
) -> tuple[list[pd.DataFrame], int]:
    """Cell tables of one slide's tiles, and the number of tiles that failed. ``found``
    is the number of cells found before this slide, for the progress bar; each tile's
    owned label map goes into ``masks`` when label masks are exported."""
    frames, failures = [], 0
    width, height = int(slide["width"]), int(slide["height"])
    with open_slide(slide["path"]) as reader:
        for batch in _batches(tiles.to_dict("records"), params.tiles_per_batch):
            images, readable = [], []
            for tile in batch:
                try:
                    images.append(read_tile(reader, tile))
                    readable.append(tile)
                except Exception as exc:  # one unreadable tile must not cost the slide
                    failures += 1
                    logger.error("Tile %s: cannot be read (%s)", tile["tile_id"], exc)
            mpp = float(np.sqrt(batch[0]["out_mpp_x"] * batch[0]["out_mpp_y"]))
            try:
                label_maps = segmenter.segment(images, mpp) if images else []
            except Exception as exc:
                failures += len(readable)
                logger.error("Tiles %s…: segmentation failed (%s)", readable[0]["tile_id"], exc)
                label_maps, readable = [], []
            for tile, rgb, labels in zip(readable, images, label_maps, strict=True):
                owned = stitch(labels, tile, width, height)
                frames.append(measure_cells(owned, rgb, tile, segmenter.name))
                if params.export_label_masks:
                    masks[f"{tile['slide_id']}/{tile['tile_id']}"] = _CompressedLabels(owned)
            progress.update(len(batch))
            progress.set_postfix(slide=slide.name, cells=found + sum(len(f) for f in frames))
    return frames, failures


def segment_cells(
    slides: pd.DataFrame, tiles: pd.DataFrame, tile_quality: pd.DataFrame, params: SegmentationParams
) -> tuple[pd.DataFrame, dict]:
    """The cell table: segment every kept tile at its tiling resolution (in batches of
    ``tiles_per_batch``), keep the cells each tile owns (core box, not cut) and measure
    them in level-0 / physical units. With ``export_label_masks``, also each tile's
    label map of the cells it owns (lazy partitions ``<slide_id>/<tile_id>``, held
    compressed until written); otherwise no label maps.

    The segmenter is loaded first, so a missing Cellpose checkpoint stops the node
    before any tile is read. A tile that fails is logged and skipped; a slide whose tiles
    all fail is reported and the other slides go on. Tiles without cells give no rows.
    """
    segmenter = params.make_segmenter()
    kept = tiles.merge(tile_quality.loc[tile_quality["keep"], ["tile_id"]], on="tile_id")
    slides_by_id = slides.set_index("slide_id")
    frames = [empty_cells()]
    masks: dict = {}
    failed_slides: list[str] = []
    with tqdm(total=len(kept), desc=f"Segmenting ({segmenter.name})", unit="tile") as progress:
        found = 0
        for slide_id, slide_tiles in kept.groupby("slide_id", sort=False):
            try:
                slide_frames, failures = _segment_slide(
                    slides_by_id.loc[slide_id], slide_tiles, segmenter, params, progress, found, masks
                )
            except Exception as exc:  # one bad slide must not cost the others
                logger.error(
                    "Slide %s: segmentation failed (%s: %s); skipped", slide_id, type(exc).__name__, exc
                )
                failed_slides.append(f"  {slide_id}: {type(exc).__name__}: {exc}")
                continue
            n_cells = sum(len(f) for f in slide_frames)
            found += n_cells
            frames.extend(slide_frames)
            if failures == len(slide_tiles):
                logger.error("Slide %s: all %d tiles failed; no cells", slide_id, failures)
                failed_slides.append(f"  {slide_id}: all {failures} tiles failed (see the log)")
            else:
                logger.info(
                    "Slide %s: %d cells in %d tiles (%d failed)",
                    slide_id,
                    n_cells,
                    len(slide_tiles),
                    failures,
                )
    n_slides = kept["slide_id"].nunique()
    if n_slides and len(failed_slides) == n_slides:
        # Writing an empty cell table would look like a finished run that found nothing.
        raise SegmentationFailedError(
            f"Segmentation failed on every slide ({n_slides}); nothing was written:\n"
            + "\n".join(failed_slides)
        )
    cells = pd.concat([f for f in frames if len(f)] or frames, ignore_index=True)
    return cells[CELL_COLUMNS], masks
