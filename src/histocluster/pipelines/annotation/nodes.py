"""Nodes of the ``annotation`` pipeline. Pictures and per-slide files are returned as
callables (PartitionedDataset lazy saving): each is drawn when it is written, one at a
time. Every picture an earlier stage saved (thumbnails, crops, plots) is a catalog input
here, not read or drawn again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.errors import UserInputError
from histocluster.lazy import materialise
from histocluster.reporting import qupath
from histocluster.reporting.anndata_export import cells_anndata
from histocluster.reporting.annotated_cells import (
    coloured_cells,
    counts,
    slide_cell_stats,
    slide_cells,
    slide_ids,
)
from histocluster.reporting.cell_csv import cell_csv_table
from histocluster.reporting.colours import colour_mode, label_colours, legend
from histocluster.reporting.drawing import (
    cells_touching,
    check_tiles,
    cluster_gallery,
    counts_figure,
    gallery_crops_of,
    overlay_texts,
    segmentation_check,
    slide_overview,
    tile_overlay,
)
from histocluster.reporting.html_report import Workbench, build_report, clustering_in_words
from histocluster.reporting.settings import AnnotationParams
from histocluster.reporting.spatialdata_export import CellsSpatialData
from histocluster.reporting.viewer_json import viewer_json
from histocluster.run_lineage import require_same_cells
from histocluster.wsi.slides import open_slide, picture_thumbnail
from histocluster.wsi.tile_grid import read_tile_on_slide

logger = logging.getLogger(__name__)

Lazy = dict[str, Callable[[], Image.Image]]


def annotate_cells(
    cells: pd.DataFrame, clusters: pd.DataFrame, cell_labels: pd.DataFrame, params: AnnotationParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cell table with cluster, label and the colour they are drawn in, and its
    outlines alone (``cell_id``, ``slide_id``, ``polygon``: the same objects, not a copy),
    so that the last exporter holds them without the whole table; refuses tables that do
    not describe the same cells."""
    others = {"clusters": clusters["cell_id"]}
    if cell_labels is not None and len(cell_labels):  # none: coloured by cluster
        others["cell_labels"] = cell_labels["cell_id"]
    require_same_cells(cells["cell_id"], others, fix="kedro run --pipelines=clustering,classification")
    table, mode = coloured_cells(cells, clusters, cell_labels, params.colour_by)
    if mode != params.colour_by:
        logger.info("Annotation: no cell has a label yet; pictures are coloured by cluster")
    return table, table[["cell_id", "slide_id", "polygon"]]


def export_qupath(table: pd.DataFrame, params: AnnotationParams) -> dict:
    """One QuPath GeoJSON per slide (``<slide_id>.geojson``, ``.geojson.gz`` above
    ``geojson_gzip_above`` cells), streamed when saved."""
    colours = dict(zip(table["class_name"], table["colour"], strict=False)) if len(table) else {}
    sizes = table["slide_id"].value_counts()
    out = {}
    for slide_id in slide_ids(table):
        suffix = ".geojson.gz" if sizes[slide_id] > params.geojson_gzip_above else ".geojson"
        out[f"{slide_id}{suffix}"] = partial(
            _slide_file, partial(qupath.features, colours=colours), table, slide_id
        )
    return out


def _slide_file(make: Callable[[pd.DataFrame], object], table: pd.DataFrame, slide_id: str):
    """``make`` of one slide's rows, taken when its file is written (not every slide's
    copy held at once; no copy at all on a one-slide run)."""
    return make(slide_cells(table, slide_id))


def export_cell_csv(slides: pd.DataFrame, table: pd.DataFrame) -> dict:
    """One per-cell CSV per slide (``<slide_id>.csv``, :mod:`histocluster.reporting.cell_csv`),
    made when saved."""
    by_slide = slides.set_index("slide_id")
    return {
        str(slide_id): partial(
            _slide_file,
            partial(
                cell_csv_table, mpp_x=by_slide.loc[slide_id, "mpp_x"], mpp_y=by_slide.loc[slide_id, "mpp_y"]
            ),
            table,
            slide_id,
        )
        for slide_id in slide_ids(table)
    }


def export_anndata(slides: pd.DataFrame, table: pd.DataFrame, embeddings, clustering) -> object:
    """The run's cells as one AnnData (:mod:`histocluster.reporting.anndata_export`), with
    the clustering's embedding matrix (``cell_embeddings``) and parameters."""
    colours = label_colours(table["label"].astype(str).unique())
    parameters = clustering.model_dump() if hasattr(clustering, "model_dump") else dict(clustering)
    return cells_anndata(table, slides, colours, (embeddings.cell_ids, embeddings.matrix), parameters)


def export_spatialdata(
    slides: pd.DataFrame, outlines: pd.DataFrame, adata, thumbnails: Lazy, params: AnnotationParams
) -> dict:
    """The run's cells as SpatialData, written when saved
    (:class:`~histocluster.reporting.spatialdata_export.CellsSpatialData`):
    ``{"spatialdata": ...}``, or ``{}`` when ``annotation.spatialdata`` is false, or ``auto``
    and the spatialdata package is not installed (said in the log)."""
    import importlib.util

    if params.spatialdata is False:
        return {}
    if importlib.util.find_spec("spatialdata") is None:
        if params.spatialdata == "auto":
            logger.info('Annotation: no cells.zarr (SpatialData): pip install -e ".[scverse]" to have one')
            return {}
        raise UserInputError(
            'annotation.spatialdata is true but the spatialdata package is not installed: pip install -e ".[scverse]"'
        )
    images = {
        slide_id: materialise(thumbnails[slide_id])
        for slide_id in slides["slide_id"]
        if slide_id in thumbnails
    }
    return {"spatialdata": CellsSpatialData(adata, outlines, slides, images)}


def export_viewer_json(slides: pd.DataFrame, tiles: pd.DataFrame, table: pd.DataFrame) -> dict:
    """Per slide: tiles with their cells, level-0 coordinates, µm/px (lazy)."""
    by_slide = slides.set_index("slide_id")
    by_tile = tiles.set_index("tile_id")
    return {
        slide_id: partial(_slide_file, partial(viewer_json, by_slide.loc[slide_id], by_tile), table, slide_id)
        for slide_id in slide_ids(table)
    }


def _gallery(
    crops: Lazy, shown: list[tuple[str, str, str]], row: dict, label_row, crop_um, params
) -> Image.Image:
    return cluster_gallery(
        [(kind, materialise(crops[key]), caption) for kind, key, caption in shown],
        row,
        label_row,
        params.gallery.size,
        params.gallery.columns,
        crop_um,
    )


def draw_galleries(
    members: pd.DataFrame,
    crops: Lazy,
    summary: pd.DataFrame,
    cluster_labels: pd.DataFrame,
    params: AnnotationParams,
) -> dict:
    """``cluster_<id>``: the cluster's typical, random and borderline members (the crops the
    clustering stage saved at the slide's finest resolution) with a scale bar, its size,
    the cells each slide gives it, and its label (lazy)."""
    labels = cluster_labels.set_index("cluster_id")
    out = {}
    for row in summary[~summary["noise"].astype(bool)].to_dict("records"):
        cluster_id = int(row["cluster_id"])
        mine = members[members["cluster_id"] == cluster_id]
        shown = gallery_crops_of(mine, crops)
        crop_um = float(mine["crop_um"].iloc[0]) if len(mine) else 32.0
        label_row = labels.loc[cluster_id].to_dict() if cluster_id in labels.index else None
        out[f"cluster_{cluster_id:03d}"] = partial(_gallery, crops, shown, row, label_row, crop_um, params)
    return out


class _SharedTiles:
    """Tile pixels read once for all the pictures that show the tile: each tile is kept
    from its first picture until its last (``uses`` counts them), then dropped."""

    def __init__(self) -> None:
        self.uses: dict[str, int] = {}
        self.pixels: dict[str, np.ndarray] = {}

    def want(self, tile_id: str) -> None:
        self.uses[tile_id] = self.uses.get(tile_id, 0) + 1

    def read(self, path: str, tile: dict) -> np.ndarray:
        tile_id = tile["tile_id"]
        rgb = self.pixels.get(tile_id)
        if rgb is None:
            with open_slide(path) as reader:
                rgb = read_tile_on_slide(reader, tile)
        self.uses[tile_id] -= 1
        if self.uses[tile_id] > 0:
            self.pixels[tile_id] = rgb
        else:
            self.pixels.pop(tile_id, None)
        return rgb


def _overlay(
    path: str,
    tile: dict,
    table: pd.DataFrame,
    rows: np.ndarray,
    params: AnnotationParams,
    shared: _SharedTiles,
) -> Image.Image:
    rgb = shared.read(path, tile)
    cells = table.iloc[rows]  # the tile's cells, taken when it is drawn
    o = params.overlay
    confident = cells["cluster_confidence"].to_numpy() >= o.min_confidence
    shown = (cells[confident] if o.filtered else cells).reset_index(drop=True)
    faint = cells[~confident].reset_index(drop=True) if o.filtered else None
    texts = None
    if o.texts:
        texts = overlay_texts(shown["cluster_id"], shown["label"], shown["cluster_confidence"])
    return tile_overlay(
        rgb,
        tile,
        shown,
        shown["colour"],
        texts,
        o.boxes,
        o.max_texts,
        faint,
        None if faint is None else faint["colour"],
    )


def draw_overlays(
    slides: pd.DataFrame, tiles: pd.DataFrame, table: pd.DataFrame, params: AnnotationParams
) -> dict:
    """``<slide_id>/cluster_<id>_<tile_id>``: for each cluster, the ``tiles_per_cluster``
    tiles holding most of its cells above ``min_confidence``, every cell of the tile drawn
    (only the confident ones when ``filtered``); with ``all_tiles`` also
    ``<slide_id>/<tile_id>`` for every tile with cells — lazy, one tile read per picture."""
    by_tile = tiles.set_index("tile_id")
    paths = slides.set_index("slide_id")["path"]
    o = params.overlay
    out = {}
    shared = _SharedTiles()
    # Row positions per tile, not per-tile copies: the cells are taken when a tile is drawn.
    rows_of = table.groupby("tile_id", sort=False).indices
    confident = table[(table["cluster_confidence"] >= o.min_confidence) & ~table["is_noise"]]
    for cluster_id, cells in confident.groupby("cluster_id"):
        best = (
            cells.groupby("tile_id")["cluster_confidence"]
            .agg(["size", "mean"])
            .sort_values(["size", "mean"], ascending=False)
        )
        for tile_id in best.index[: o.tiles_per_cluster]:
            tile = {"tile_id": tile_id, **by_tile.loc[tile_id].to_dict()}
            shared.want(tile_id)
            out[f"{tile['slide_id']}/cluster_{int(cluster_id):03d}_{tile_id}"] = partial(
                _overlay, paths[tile["slide_id"]], tile, table, rows_of[tile_id], params, shared
            )
    if o.all_tiles:  # every tile with cells, still drawn one at a time when saved
        for tile_id, rows in rows_of.items():
            tile = {"tile_id": tile_id, **by_tile.loc[tile_id].to_dict()}
            shared.want(tile_id)
            out[f"{tile['slide_id']}/{tile_id}"] = partial(
                _overlay, paths[tile["slide_id"]], tile, table, rows, params, shared
            )
    return out


def _check(path: str, tile: dict, cells: pd.DataFrame, title: str, zoom: int) -> Image.Image:
    with open_slide(path) as reader:
        rgb = read_tile_on_slide(reader, tile)
    return segmentation_check(rgb, tile, cells, title, zoom)


def draw_segmentation_checks(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    tile_quality: pd.DataFrame,
    cells: pd.DataFrame,
    params: AnnotationParams,
) -> dict:
    """``<slide_id>/<k>_<why>_<tile_id>``: per slide, the densest and the darkest kept tiles
    and more spread over the slide (:func:`check_tiles`), each beside itself with every
    outline that touches it drawn, whichever tile owns the cell — lazy, one read each."""
    p = params.segmentation_check
    chosen = check_tiles(tiles, tile_quality, cells, p.tiles_per_slide)
    by_tile = tiles.set_index("tile_id")
    paths = slides.set_index("slide_id")["path"]
    out = {}
    chosen["rank"] = chosen.groupby("slide_id").cumcount()
    for row in chosen.itertuples(index=False):
        tile = {"tile_id": row.tile_id, **by_tile.loc[row.tile_id].to_dict()}
        touching = cells_touching(cells[cells["slide_id"] == row.slide_id], tile)
        title = (
            f"{row.slide_id} · {row.tile_id} ({row.why}) · {len(touching)} outlines · "
            f"left: the tile, right: every outline"
        )
        out[f"{row.slide_id}/{row.rank}_{row.why}_{row.tile_id}"] = partial(
            _check, paths[row.slide_id], tile, touching, title, p.zoom
        )
    logger.info("Segmentation check: %d tiles drawn with every outline", len(out))
    return out


def _overview(slide: pd.Series, thumbnail: Callable[[], Image.Image], cells, names: dict, title: str):
    image = picture_thumbnail(slide["path"], np.asarray(materialise(thumbnail).convert("RGB")))
    return slide_overview(image, slide["width"], cells, cells["colour"], names, title)


def draw_slide_overviews(
    slides: pd.DataFrame, thumbnails: Lazy, table: pd.DataFrame, params: AnnotationParams
) -> dict:
    """``<slide_id>``: the slide's saved thumbnail (``tiling.thumbnail_mpp``) with every cell
    as a dot (lazy)."""
    mode = colour_mode(table, params.colour_by)
    names = legend(table, mode)
    ok = slides[slides["status"] == "ok"].set_index("slide_id")
    out = {}
    for slide_id in ok.index:
        if slide_id not in thumbnails:
            logger.error("Slide %s: no saved thumbnail (rerun the tiling pipeline); no overview", slide_id)
            continue
        cells = table[table["slide_id"] == slide_id]
        title = f"{slide_id}: {len(cells):,} cells, coloured by {mode}"
        out[slide_id] = partial(_overview, ok.loc[slide_id], thumbnails[slide_id], cells, names, title)
    return out


def count_cells(table: pd.DataFrame, params: AnnotationParams) -> tuple[dict, Image.Image, dict]:
    """``counts.json`` (cells per label and per cluster, per slide), a bar chart, and what
    the report says of the cells (per-slide numbers and what the pictures are coloured
    by), so that the report does not hold the cell table."""
    result = counts(table, params.not_cells)
    report_cells = {
        "slides": slide_cell_stats(table, params.not_cells),
        "coloured_by": colour_mode(table, params.colour_by),
    }
    return result, counts_figure(result), report_cells


def _as_mapping(params) -> dict:
    """Another pipeline's parameters as a mapping: Kedro hands this pipeline's nodes
    another pipeline's parameters as their model or as a plain mapping."""
    return params.model_dump() if hasattr(params, "model_dump") else dict(params)


def write_report(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    tile_quality: pd.DataFrame,
    report_cells: dict,
    summary: pd.DataFrame,
    cluster_labels: pd.DataFrame,
    annotation_counts: dict,
    tiling_overviews: Lazy,
    cell_overviews: Lazy,
    contact_sheets: Lazy,
    galleries: Lazy,
    cluster_map: Image.Image,
    cluster_sizes: Image.Image,
    label_counts: Image.Image,
    slide_checks: pd.DataFrame,
    segmentation_checks: Lazy,
    params: AnnotationParams,
    classification,
    clustering=None,
) -> str:
    """The self-contained HTML report (:func:`histocluster.reporting.html_report.build_report`),
    from the tables and the pictures earlier nodes saved; its naming workbench names the
    labels file and vocabulary of ``classification`` (the classification parameters, as
    their model or a mapping), and it says what the clusters were made from
    (``clustering``, the clustering parameters likewise)."""
    values = _as_mapping(classification)
    vocabulary = values.get("label_sets", {}).get(values.get("label_set"), {}).get("labels", [])
    workbench = Workbench(values.get("labels_file", Workbench.labels_file), list(vocabulary))
    clustered_on = clustering_in_words(_as_mapping(clustering)) if clustering is not None else ""
    page = build_report(
        slides,
        tiles,
        tile_quality,
        report_cells["slides"],
        summary,
        cluster_labels,
        annotation_counts,
        {
            "tiling": tiling_overviews,
            "overview": cell_overviews,
            "contact_sheet": contact_sheets,
            "gallery": galleries,
            "segmentation_check": segmentation_checks,
            "plot": {
                "cluster_map": cluster_map,
                "cluster_sizes": cluster_sizes,
                "label_counts": label_counts,
            },
        },
        report_cells["coloured_by"],
        slide_checks,
        workbench,
        clustered_on,
        params.report_picture_slides,
    )
    stats = report_cells["slides"]
    logger.info(
        "Report: %d slides, %d cells%s, %d clusters",
        len(slides),
        int(stats["cells"].sum()),
        f" (+{int(stats['artefacts'].sum())} named as not cells)" if stats["artefacts"].sum() else "",
        len(summary),
    )
    return page
