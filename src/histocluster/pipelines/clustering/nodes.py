"""Nodes of the ``clustering`` pipeline: embed → reduce (+ 2-D map) → cluster →
representatives, their crops and the summary → plots. Each calls the
:mod:`histocluster.clustering` function named in its doc."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.clustering.clusterers import CLUSTER_COLUMNS, NOISE, cluster_cells
from histocluster.clustering.embedding import Embeddings, embed
from histocluster.clustering.plots import (
    cluster_map_figure,
    cluster_map_plotly,
    cluster_sizes_figure,
    figure_image,
)
from histocluster.clustering.reduction import cell_map, fit_reduce
from histocluster.clustering.settings import ClusteringParams
from histocluster.clustering.summary import (
    crop_gallery_members,
    network_type_shares,
    pick_gallery_members,
    pick_representatives,
    summarise,
)
from histocluster.run_lineage import require_same_cells

logger = logging.getLogger(__name__)


def embed_cells(
    slides: pd.DataFrame, cells: pd.DataFrame, deep_features: Embeddings, params: ClusteringParams
) -> Embeddings:
    """The configured embedders, combined with their weights
    (:func:`histocluster.clustering.embedding.embed`); reads no pixels."""
    return embed(slides, cells, deep_features, params)


def reduce_embeddings(
    embeddings: Embeddings, params: ClusteringParams
) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """Reduction (:mod:`histocluster.clustering.reduction`) and the 2-D map; returns the
    reduced matrix, the map coordinates per cell and the fitted reducers (to place new cells)."""
    x = np.asarray(embeddings.matrix, dtype=np.float32)
    reducer, reduced = fit_reduce(x, params.reduction, params.device)
    mapper, coords = cell_map(reduced, params.reduction, params.device)
    logger.info("Reduced %d × %d → %d dims (%s)", *x.shape, reduced.shape[1], reducer.method)
    cell_map_table = pd.DataFrame(
        {"cell_id": embeddings.cell_ids, "map_x": coords[:, 0], "map_y": coords[:, 1]}
    )
    return reduced, cell_map_table, {"reduction": reducer, "map": mapper}


def cluster(
    reduced: np.ndarray, cell_map_table: pd.DataFrame, cells: pd.DataFrame, params: ClusteringParams
) -> tuple[pd.DataFrame, object]:
    """Clusters (:mod:`histocluster.clustering.clusterers`): one row per embedded cell
    (the embeddings must hold exactly the cells of the cell table)."""
    require_same_cells(
        cells["cell_id"],
        {"cell_embeddings": cell_map_table["cell_id"]},
        fix="kedro run --pipelines=clustering",
    )
    where = cell_map_table[["cell_id"]].merge(
        cells[["cell_id", "slide_id", "tile_id"]], on="cell_id", how="left"
    )
    result = cluster_cells(reduced, where["slide_id"].to_numpy(), params.clusterer, params.device)
    clusters = where.assign(
        cluster_id=result.labels,
        is_noise=result.is_noise,
        confidence=result.confidence,
        map_x=cell_map_table["map_x"].to_numpy(),
        map_y=cell_map_table["map_y"].to_numpy(),
    )[CLUSTER_COLUMNS]
    n_clusters = len(np.unique(result.labels[result.labels != NOISE]))
    logger.info(
        "Clustered %d cells into %d clusters (%s, %s); %d noise",
        len(clusters),
        n_clusters,
        params.clusterer.method,
        params.clusterer.scope,
        int(result.is_noise.sum()),
    )
    return clusters, result.model


def summarise_clusters(
    cells: pd.DataFrame, clusters: pd.DataFrame, deep_features: Embeddings | None, params: ClusteringParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Representatives and the cluster summary (:mod:`histocluster.clustering.summary`);
    with the type network's features (``segmentation.cell_features.deep: typenet``) also
    the type most of each cluster's cells got from it and their share (``network_type``,
    ``network_share``): the report offers it as a suggested name."""
    representatives = pick_representatives(clusters, params.representatives.n, params.representatives.pool)
    summary = summarise(cells, clusters, representatives)
    shares = network_type_shares(clusters, deep_features)
    if shares is not None:
        summary = summary.merge(shares, on="cluster_id", how="left")
    return summary, representatives


def pick_gallery_cells(
    clusters: pd.DataFrame, representatives: pd.DataFrame, params: ClusteringParams
) -> pd.DataFrame:
    """The cells each gallery shows: typical, random and borderline members from every
    slide the cluster spans (:func:`histocluster.clustering.summary.pick_gallery_members`)."""
    spec = params.representatives
    return pick_gallery_members(
        clusters,
        representatives,
        spec.gallery_random,
        spec.gallery_borderline,
        spec.crop_um,
        params.clusterer.random_state or 0,
    )


def crop_gallery_cells(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    cells: pd.DataFrame,
    members: pd.DataFrame,
    params: ClusteringParams,
) -> tuple[dict[str, Callable[[], Image.Image]], dict[str, Callable[[], Image.Image]]]:
    """Each gallery cell's crop at its slide's finest resolution, read once: the
    representatives' crops (``<cluster_id>/<rank>_<cell_id>``: the model is shown these)
    and every gallery cell's (:func:`histocluster.clustering.summary.crop_gallery_members`),
    each made when its partition is saved."""
    spec = params.representatives
    return crop_gallery_members(slides, tiles, cells, members, spec.crop_um, spec.crop_size)


def plot_clusters(clusters: pd.DataFrame, summary: pd.DataFrame, params: ClusteringParams):
    """The cell map (PNG and plotly JSON) and the cluster-size bar chart."""
    return (
        figure_image(cluster_map_figure(clusters, params.plots.max_points_png)),
        cluster_map_plotly(clusters, params.plots.max_points_interactive),
        figure_image(cluster_sizes_figure(summary)),
    )
