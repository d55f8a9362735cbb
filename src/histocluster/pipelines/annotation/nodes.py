"""Nodes of the ``annotation`` pipeline. Pictures and per-slide files are returned as
callables (PartitionedDataset lazy saving): each is drawn when it is written, one at a time."""

from __future__ import annotations

import logging
from functools import partial

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from histocluster.clustering.clusterers import NOISE  # noqa: E402
from histocluster.clustering.plots import cluster_map_figure, cluster_sizes_figure  # noqa: E402
from histocluster.features.cell_pixels import cell_crops_by_id  # noqa: E402
from histocluster.params import AnnotationParams  # noqa: E402
from histocluster.reporting import annotation, qupath
from histocluster.reporting import html_report as report  # noqa: E402
from histocluster.wsi.slides import open_slide  # noqa: E402
from histocluster.wsi.tile_grid import read_tile  # noqa: E402

logger = logging.getLogger(__name__)


def annotate_cells(
    cells: pd.DataFrame, clusters: pd.DataFrame, cell_labels: pd.DataFrame, params: AnnotationParams
) -> pd.DataFrame:
    """The cell table with cluster, label and the colour they are drawn in."""
    table = annotation.annotated_cells(cells, clusters, cell_labels)
    names, colours, _ = annotation.colour_table(table, colour_by(table, params))
    if colour_by(table, params) != params.colour_by:
        logger.info("Annotation: no cell has a label yet; pictures are coloured by cluster")
    table["class_name"] = names.to_numpy()
    table["colour"] = colours.to_numpy()
    return table


def colour_by(table: pd.DataFrame, params: AnnotationParams) -> str:
    """``colour_by``, except that pictures of a run where no cell has a label yet are
    coloured by cluster (said in the log and in every picture's title)."""
    if params.colour_by == "label" and len(table) and table["label_source"].eq("none").all():
        return "cluster"
    return params.colour_by


def _legend(table: pd.DataFrame, params: AnnotationParams) -> dict:
    return annotation.colour_table(table, colour_by(table, params))[2] if len(table) else {}


def export_qupath(table: pd.DataFrame, params: AnnotationParams) -> dict:
    """One QuPath GeoJSON per slide (``<slide_id>.geojson``, ``.geojson.gz`` above
    ``geojson_gzip_above`` cells), streamed when saved."""
    colours = dict(zip(table["class_name"], table["colour"], strict=False)) if len(table) else {}
    out = {}
    for slide_id, cells in table.groupby("slide_id", sort=True):
        suffix = ".geojson.gz" if len(cells) > params.geojson_gzip_above else ".geojson"
        out[f"{slide_id}{suffix}"] = partial(qupath.features, cells, colours)
    return out


def export_viewer_json(slides: pd.DataFrame, tiles: pd.DataFrame, table: pd.DataFrame) -> dict:
    """Per slide: tiles with their cells, level-0 coordinates, µm/px (lazy)."""
    by_slide = slides.set_index("slide_id")
    by_tile = tiles.set_index("tile_id")
    return {
        slide_id: partial(annotation.viewer_json, by_slide.loc[slide_id], by_tile, cells)
        for slide_id, cells in table.groupby("slide_id", sort=True)
    }


def _gallery(
    slides, tiles, table, reps, summary_row, labels_row, params: AnnotationParams, size: int
) -> Image.Image:
    chosen = table[table["cell_id"].isin(reps["cell_id"])]
    crops = cell_crops_by_id(slides, tiles, chosen, params.gallery.crop_um, size)
    ordered = reps.sort_values("rank")
    ordered = ordered[ordered["cell_id"].isin(crops)]
    captions = list(ordered["slide_id"])
    ordered = list(ordered["cell_id"])
    cluster_id = int(summary_row["cluster_id"])
    label = labels_row.get("label", "unlabelled") if labels_row is not None else "unlabelled"
    line2 = f"{label}"
    if labels_row is not None and labels_row.get("source") not in (None, "none"):
        line2 += f" ({labels_row['source']}, agreement {float(labels_row['agreement']):.2f})"
    title = f"cluster {cluster_id}: {int(summary_row['size']):,} cells on {int(summary_row['n_slides'])} slide(s)\n{line2}"
    return annotation.gallery([crops[c] for c in ordered], captions, title, params.gallery.columns)


def draw_galleries(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    table: pd.DataFrame,
    representatives: pd.DataFrame,
    summary: pd.DataFrame,
    cluster_labels: pd.DataFrame,
    params: AnnotationParams,
) -> dict:
    """``cluster_<id>``: the cluster's representatives with its size and label (lazy)."""
    labels = cluster_labels.set_index("cluster_id")
    out = {}
    for row in summary[summary["cluster_id"] != NOISE].to_dict("records"):
        cluster_id = int(row["cluster_id"])
        reps = representatives[representatives["cluster_id"] == cluster_id]
        label_row = labels.loc[cluster_id].to_dict() if cluster_id in labels.index else None
        out[f"cluster_{cluster_id:03d}"] = partial(
            _gallery, slides, tiles, table, reps, row, label_row, params, params.gallery.size
        )
    return out


def _overlay(slides: pd.DataFrame, tile: dict, cells: pd.DataFrame, params: AnnotationParams) -> Image.Image:
    path = slides.set_index("slide_id").loc[tile["slide_id"], "path"]
    with open_slide(path) as reader:
        rgb = read_tile(reader, tile)
    o = params.overlay
    shown = cells[cells["cluster_confidence"] >= o.min_confidence] if o.filtered else cells
    texts = None
    if o.texts:
        texts = shown.apply(lambda r: f"{r['cluster_id']} {r['label']} {r['cluster_confidence']:.2f}", axis=1)
    colours = shown["colour"].reset_index(drop=True)
    image = annotation.tile_overlay(
        rgb,
        tile,
        shown.reset_index(drop=True),
        colours,
        None if texts is None else texts.reset_index(drop=True),
        o.boxes,
        o.max_texts,
    )
    return image


def draw_overlays(
    slides: pd.DataFrame, tiles: pd.DataFrame, table: pd.DataFrame, params: AnnotationParams
) -> dict:
    """``<slide_id>/cluster_<id>_<tile_id>``: for each cluster, the ``tiles_per_cluster``
    tiles holding most of its cells above ``min_confidence``, every cell of the tile drawn
    (only the confident ones when ``filtered``); with ``all_tiles`` also
    ``<slide_id>/<tile_id>`` for every tile with cells — lazy, one tile read per picture."""
    by_tile = tiles.set_index("tile_id")
    o = params.overlay
    out = {}
    confident = table[(table["cluster_confidence"] >= o.min_confidence) & (table["cluster_id"] != NOISE)]
    for cluster_id, cells in confident.groupby("cluster_id"):
        best = (
            cells.groupby("tile_id")["cluster_confidence"]
            .agg(["size", "mean"])
            .sort_values(["size", "mean"], ascending=False)
        )
        for tile_id in best.index[: o.tiles_per_cluster]:
            tile = {"tile_id": tile_id, **by_tile.loc[tile_id].to_dict()}
            tile_cells = table[table["tile_id"] == tile_id]
            out[f"{tile['slide_id']}/cluster_{int(cluster_id):03d}_{tile_id}"] = partial(
                _overlay, slides, tile, tile_cells, params
            )
    if o.all_tiles:  # every tile with cells, still drawn one at a time when saved
        for tile_id, tile_cells in table.groupby("tile_id"):
            tile = {"tile_id": tile_id, **by_tile.loc[tile_id].to_dict()}
            out[f"{tile['slide_id']}/{tile_id}"] = partial(_overlay, slides, tile, tile_cells, params)
    return out


def _overview(
    slide: pd.Series, cells: pd.DataFrame, legend: dict, params: AnnotationParams, mode: str
) -> Image.Image:
    mpp = float(np.sqrt(slide["mpp_x"] * slide["mpp_y"]))
    downsample = max(1.0, params.overview_mpp / mpp)
    with open_slide(slide["path"]) as reader:
        thumbnail = reader.thumbnail(downsample)
    factor = max(1, -(-800 // max(thumbnail.shape[:2])))  # small slides: enlarged so cells stay visible
    if factor > 1:
        thumbnail = np.kron(thumbnail, np.ones((factor, factor, 1), dtype=thumbnail.dtype))
    scale = slide["width"] / thumbnail.shape[1]
    title = f"{slide.name}: {len(cells):,} cells, coloured by {mode}"
    return annotation.slide_overview(thumbnail, scale, cells, cells["colour"], legend, title)


def draw_slide_overviews(slides: pd.DataFrame, table: pd.DataFrame, params: AnnotationParams) -> dict:
    """``<slide_id>``: the whole slide at ``overview_mpp`` with every cell as a dot (lazy)."""
    legend = _legend(table, params)
    mode = colour_by(table, params)
    ok = slides[slides["status"] == "ok"].set_index("slide_id")
    return {
        slide_id: partial(
            _overview, ok.loc[slide_id], table[table["slide_id"] == slide_id], legend, params, mode
        )
        for slide_id in ok.index
    }


def count_cells(table: pd.DataFrame) -> tuple[dict, plt.Figure]:
    """``counts.json`` (cells per label and per cluster, per slide) and a bar chart."""
    counts = annotation.counts(table)
    figure, ax = plt.subplots(figsize=(8, 4), dpi=120)
    labels = counts["all"]["labels"]
    if labels:
        ax.bar(
            list(labels),
            list(labels.values()),
            color=[np.array(annotation.label_colour(k)) / 255 for k in labels],
        )
        ax.tick_params(axis="x", labelrotation=45)
    else:
        ax.text(0.5, 0.5, "no cells", ha="center", va="center")
    ax.set_ylabel("cells")
    ax.set_title(f"Cells per label ({counts['all']['cells']:,} cells)")
    figure.tight_layout()
    return counts, figure


def _figure_tag(figure: plt.Figure, alt: str) -> str:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return report.image_tag(Image.open(buffer), alt)


def write_report(
    slides: pd.DataFrame,
    tiling_overviews: dict,
    cell_overviews: dict,
    tiles: pd.DataFrame,
    tile_quality: pd.DataFrame,
    table: pd.DataFrame,
    summary: pd.DataFrame,
    representatives: pd.DataFrame,
    cluster_labels: pd.DataFrame,
    params: AnnotationParams,
) -> str:
    """The self-contained HTML report (:mod:`histocluster.reporting.html_report`)."""
    ok = slides[slides["status"] == "ok"]
    n_clusters = int((summary["cluster_id"] != NOISE).sum()) if len(summary) else 0
    labelled = (
        cluster_labels[cluster_labels["status"] == "labelled"] if len(cluster_labels) else cluster_labels
    )
    overall = {
        "slides": f"{len(ok)} read, {len(slides) - len(ok)} not readable",
        "tiles": f"{len(tiles)} on tissue, {int(tile_quality['keep'].sum()) if len(tile_quality) else 0} kept",
        "cells": f"{len(table):,}",
        "clusters": f"{n_clusters} ({len(labelled)} named)",
        "coloured by": colour_by(table, params),
    }

    def slide_cards():
        if slides.empty:
            yield report.empty("no slides")
        for row in slides.itertuples(index=False):
            if row.status != "ok":
                yield f"<div class='card'><b>{row.slide_id}</b>{report.empty('not readable: ' + str(row.error))}</div>"
                continue
            cells = table[table["slide_id"] == row.slide_id]
            image = cell_overviews[row.slide_id]()  # drawn by draw_slide_overviews
            note = "" if len(cells) else report.empty("no cells found on this slide")
            overview = tiling_overviews.get(row.slide_id)
            tissue = (
                report.image_tag(overview(), f"{row.slide_id} tissue and tiles", max_side=560)
                if overview
                else ""
            )
            yield (
                f"<div class='card'><b>{row.slide_id}</b> — {row.width}×{row.height} px, {row.mpp_x:.3f} µm/px, "
                f"{len(cells):,} cells{note}<div class='grid'>{tissue}"
                f"{report.image_tag(image, row.slide_id, max_side=560)}</div></div>"
            )

    filtering = (
        report.table_html(
            tile_quality.groupby("slide_id")
            .agg(tiles=("tile_id", "size"), kept=("keep", "sum"))
            .reset_index()
            .merge(
                tile_quality[~tile_quality["keep"]]
                .groupby("slide_id")["reason"]
                .agg(lambda r: ", ".join(sorted(set(r)))[:200])
                .rename("rejected because")
                .reset_index(),
                on="slide_id",
                how="left",
            )
            .fillna("")
        )
        if len(tile_quality)
        else report.empty("no tiles (no tissue found, or the tiling stage did not run)")
    )
    segmentation = (
        report.table_html(
            table.groupby("slide_id")
            .agg(
                cells=("cell_id", "size"),
                mean_area_um2=("area_um2", "mean"),
                mean_hematoxylin=("hematoxylin_mean", "mean"),
            )
            .reset_index()
        )
        if len(table)
        else report.empty("no cells were found")
    )
    if len(table):
        clustered = table[table["map_x"].notna()].rename(columns={"cluster_confidence": "confidence"})
        cluster_section = [
            _figure_tag(cluster_map_figure(clustered), "cluster map") if len(clustered) else "",
            _figure_tag(cluster_sizes_figure(summary), "cluster sizes") if len(summary) else "",
            report.details(
                f"cluster table ({len(summary)} rows)",
                report.table_html(
                    summary[
                        [
                            c
                            for c in (
                                "cluster_id",
                                "size",
                                "fraction",
                                "n_slides",
                                "mean_confidence",
                                "mean_area_um2",
                                "mean_eccentricity",
                                "mean_hematoxylin_mean",
                            )
                            if c in summary.columns
                        ]
                    ]
                ),
            ),
        ]
    else:
        cluster_section = [report.empty("no clusters: there are no cells")]
    labels = cluster_labels.set_index("cluster_id") if len(cluster_labels) else pd.DataFrame()

    def galleries():
        rows = summary[summary["cluster_id"] != NOISE].to_dict("records") if len(summary) else []
        if not rows:
            yield report.empty("no clusters to show")
        yield "<div class='grid'>"
        for row in rows:
            cluster_id = int(row["cluster_id"])
            label_row = labels.loc[cluster_id].to_dict() if cluster_id in labels.index else None
            reps = representatives[representatives["cluster_id"] == cluster_id]
            image = _gallery(slides, tiles, table, reps, row, label_row, params, params.report_gallery_size)
            yield f"<div class='card' id='cluster-{cluster_id}'>{report.image_tag(image, f'cluster {cluster_id}', max_side=520)}</div>"
        yield "</div>"

    counts, figure = count_cells(table)
    label_rows = pd.DataFrame(
        [(k, v, annotation.label_colour(k)) for k, v in counts["all"]["labels"].items()],
        columns=["label", "cells", "rgb"],
    )
    label_section = [
        _figure_tag(figure, "cells per label"),
        "<table><tr><th>label</th><th>cells</th></tr>"
        + "".join(
            f"<tr><td><span class='swatch' style='background:rgb{tuple(r.rgb)}'></span>{r.label}</td><td>{r.cells:,}</td></tr>"
            for r in label_rows.itertuples()
        )
        + "</table>",
        report.details(
            f"cluster labels ({len(cluster_labels)} clusters)",
            report.table_html(
                cluster_labels.drop(columns=["votes"], errors="ignore")
                if len(cluster_labels)
                else cluster_labels
            ),
        ),
    ]
    page = report.build(
        "histocluster report",
        overall,
        {
            "slides": slide_cards(),
            "filtering": filtering,
            "segmentation": segmentation,
            "clusters": cluster_section,
            "galleries": galleries(),
            "labels": label_section,
        },
    )
    logger.info("Report: %d slides, %d cells, %d clusters", len(slides), len(table), n_clusters)
    return page
