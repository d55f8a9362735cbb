"""Nodes of the ``clustering`` pipeline: embed → reduce (+ 2-D map) → cluster →
representatives and summary → plots. Each calls the domain modules named in its doc."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from histocluster.clustering.clusterers import NOISE, cluster_cells
from histocluster.clustering.plots import cluster_map_figure, cluster_map_plotly, cluster_sizes_figure
from histocluster.clustering.reduction import cell_map, fit_reduce
from histocluster.clustering.summary import pick_representatives, summarise
from histocluster.features.morphology import (
    Embeddings,
    cell_pixel_features,
    combine,
    keep_rows,
    morphology_embedding,
    standardise_within,
)
from histocluster.params import ClusteringParams

logger = logging.getLogger(__name__)

CLUSTER_COLUMNS = ["cell_id", "slide_id", "tile_id", "cluster_id", "is_noise", "confidence", "map_x", "map_y"]


def _level0_mpp(slides: pd.DataFrame, cells: pd.DataFrame) -> np.ndarray:
    mpp = slides.set_index("slide_id")[["mpp_x", "mpp_y"]].prod(axis=1) ** 0.5
    return cells["slide_id"].map(mpp).to_numpy(dtype=np.float64)


def embed_cells(
    slides: pd.DataFrame, tiles: pd.DataFrame, cells: pd.DataFrame, params: ClusteringParams
) -> Embeddings:
    """The configured embedders (:mod:`histocluster.features.morphology`,
    :mod:`histocluster.features.resnet`), combined with their weights. Cells whose
    pixels cannot be read are reported and left out."""
    cells = cells.reset_index(drop=True)
    if cells.empty:
        logger.warning("Clustering: the cell table is empty; no embeddings")
        return Embeddings(np.array([], dtype=object), np.zeros((0, 0), np.float32))
    usable = np.ones(len(cells), dtype=bool)
    embedder = None
    if "resnet50" in params.embedders:
        from histocluster.features.resnet import FEATURES, ResNetEmbedder

        embedder = ResNetEmbedder(params.resnet50)  # loads weights first: a missing file costs no work
    blocks: list[tuple[np.ndarray, float]] = []
    names: list[str] = []
    if "morphology" in params.embedders:
        settings = params.morphology
        pixels = cell_pixel_features(slides, tiles, cells, settings.ring_um) if settings.texture else None
        if pixels is not None:
            usable &= ~pixels.isna().all(axis=1).to_numpy()
        x, columns = morphology_embedding(
            cells, _level0_mpp(slides, cells), settings, pixels, within=params.standardise_within
        )
        blocks.append((x, params.embedders["morphology"]))
        names += [f"morphology:{c}" for c in columns]
    if embedder is None:
        matrix = blocks[0][0]
    else:
        # One matrix for everything: ResNet features are written into their columns,
        # standardised and weighted there; no second copy of cells × 2048 floats.
        start = sum(block.shape[1] for block, _ in blocks)
        matrix = np.empty((len(cells), start + FEATURES), dtype=np.float32)
        view = matrix[:, start:]
        usable &= embedder.embed(slides, tiles, cells, view)
        groups = cells["slide_id"].to_numpy() if params.standardise_within == "slide" else None
        blocks.append((standardise_within(view, groups, inplace=True), params.embedders["resnet50"]))
        names += [f"resnet50:{k}" for k in range(FEATURES)]
        combine(blocks, out=matrix)
    if not usable.all():
        logger.error(
            "Clustering: %d of %d cells have no pixels (see above) and are left out",
            (~usable).sum(),
            len(cells),
        )
        matrix = keep_rows(matrix, usable)
    logger.info("Embedded %d cells: %d dims (%s)", usable.sum(), matrix.shape[1], ", ".join(params.embedders))
    return Embeddings(cells["cell_id"].to_numpy()[usable], matrix, names)


def reduce_embeddings(
    embeddings: Embeddings, params: ClusteringParams
) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """Reduction (:mod:`histocluster.clustering.reduction`) and the 2-D map; returns the reduced
    matrix, the map coordinates per cell and the fitted reducers (to place new cells)."""
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
    """Clusters (:mod:`histocluster.clustering.clusterers`): one row per embedded cell."""
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
    cells: pd.DataFrame, clusters: pd.DataFrame, params: ClusteringParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Representatives and the cluster summary (:mod:`histocluster.clustering.summary`)."""
    representatives = pick_representatives(clusters, params.representatives.n, params.representatives.pool)
    return summarise(cells, clusters, representatives), representatives


def plot_clusters(clusters: pd.DataFrame, summary: pd.DataFrame, params: ClusteringParams):
    """The cell map (PNG and plotly JSON) and the cluster-size bar chart."""
    return (
        cluster_map_figure(clusters, params.plots.max_points_png),
        cluster_map_plotly(clusters, params.plots.max_points_interactive),
        cluster_sizes_figure(summary),
    )
