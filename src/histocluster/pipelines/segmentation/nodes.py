"""Nodes of the ``segmentation`` pipeline: the one pass over every tile (quality,
segmentation, measurements, per-cell pixel features; :mod:`histocluster.segmentation.tile_pass`)."""

from __future__ import annotations

import io
import logging
from functools import partial

import pandas as pd
from PIL import Image

from histocluster.segmentation.compute_pool import compute_pool
from histocluster.segmentation.segmenter import make_segmenter
from histocluster.segmentation.settings import SegmentationParams
from histocluster.segmentation.slide_checks import check_slides as check_slide_table
from histocluster.segmentation.slide_store import SlideStore, code_identity, slide_key
from histocluster.segmentation.tile_pass import (
    PassSettings,
    deep_feature_function,
    segment_chunk,
    segment_slides,
    slide_chunks,
)
from histocluster.wsi.settings import FilteringParams, TilingParams
from histocluster.wsi.slides import require_unique_ids

logger = logging.getLogger(__name__)


def segment_tiles(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    tiling: TilingParams,
    filtering: FilteringParams,
    params: SegmentationParams,
) -> tuple[pd.DataFrame, pd.DataFrame, object, dict, dict]:
    """Read every tile once: its quality (keep flag and reason, ``filtering`` thresholds),
    then for the kept tiles the cells they own with their measurements and pixel features.

    Returns the tile-quality table, the cell table, the cells' network features (empty
    unless ``cell_features.deep`` names a network), each kept tile's label map when
    ``export_label_masks`` (lazy partitions ``<slide_id>/<tile_id>``, held compressed) and
    the contact sheets' tile previews. The segmenter (and a network for per-cell features,
    where the pass runs in this process) load first, so a missing checkpoint stops the node
    before any tile is read.
    """
    require_unique_ids(slides)
    segmenter = make_segmenter(params)
    features = params.cell_features
    settings = PassSettings(
        quality=filtering.thresholds if filtering.enabled else None,
        tissue=tiling.tissue,
        features=features,
        tiles_per_batch=params.tiles_per_batch,
        export_label_masks=params.export_label_masks,
        preview_size=filtering.contact_sheet.thumb_size,
    )
    ok = slides[slides["status"] == "ok"]
    store, key_of = None, None
    if params.slide_store:
        store = SlideStore(params.slide_store)
        key_of = slide_key_function(settings, params)
    parallel = params.parallel
    todo = tiles[tiles["slide_id"].isin(ok["slide_id"])]
    tasks = sum(
        len(slide_chunks(group, params.tiles_per_batch, parallel.tiles_per_task))
        for _, group in todo.groupby("slide_id", sort=False)
    )
    with compute_pool(parallel, tasks) as executor:  # None: in this process
        # A network for per-cell features loads where it runs: in this process only when the
        # pass runs here (torch would otherwise stay resident here for the rest of the run,
        # +0.5 GB; the check before the first node has already found its weights).
        deep = deep_feature_function(features) if executor is None else None
        out = segment_slides(
            ok,
            tiles,
            segmenter,
            settings,
            deep,
            filtering.contact_sheet.max_tiles,
            store=store,
            key_of=key_of,
            executor=executor,
            task=partial(segment_chunk, params_json=params.model_dump_json(), settings=settings)
            if executor is not None
            else None,
            tiles_per_task=parallel.tiles_per_task,
        )
    previews = {key: Image.open(io.BytesIO(jpeg)) for key, jpeg in out.previews.items()}
    return out.quality, out.cells, out.deep, out.masks, previews


def slide_key_function(settings: PassSettings, params: SegmentationParams):
    """``key_of(slide, tiles)`` for the slide store: the pass settings, the parameters and
    the code and weights that compute a slide (:func:`~histocluster.segmentation.slide_store.slide_key`)."""
    weights, network = [], ""
    if params.segmenter == "watershed" and params.watershed.foreground == "network":
        from histocluster.segmentation.network_runtime import choose_network

        w = params.watershed
        choice = choose_network(w.weights_path, w.runtime, w.precision)
        weights.append(choice.path)
        # The runtime and arithmetic that ran (auto resolves per install and CPU).
        network = f"{choice.runtime}:{choice.arithmetic}"
    code = code_identity(weights)
    # Where it runs and where results are kept do not change a slide's result.
    text = repr(settings) + params.model_dump_json(exclude={"parallel", "slide_store"}) + network

    def key_of(slide: dict, slide_tiles: pd.DataFrame) -> str:
        return slide_key(slide, slide_tiles, text, code)

    return key_of


def check_slides(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    tile_quality: pd.DataFrame,
    cells: pd.DataFrame,
    params: SegmentationParams,
) -> pd.DataFrame:
    """Each slide's cells held up to what tissue holds (cells per mm², median nucleus
    area; :func:`histocluster.segmentation.slide_checks.check_slides`): a WARNING per slide
    that gave no cells or looks wrong, with the file that fixes it."""
    checks = check_slide_table(slides, tiles, tile_quality, cells, params.plausible)
    for row in checks.itertuples():
        if row.status == "ok":
            logger.info(
                "Slide %s: %d cells, %.0f per mm² of tissue, median nucleus %.1f µm² (%.3g µm/px from %s)",
                row.slide_id,
                row.cells,
                row.cells_per_mm2,
                row.median_area_um2,
                row.mpp,
                row.mpp_source,
            )
        else:
            logger.warning(
                "Slide %s: %s: %s. Fix: %s", row.slide_id, row.status.upper(), row.verdict, row.fix
            )
    return checks
