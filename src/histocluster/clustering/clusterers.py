"""Clustering of (reduced) cell embeddings.

Methods (``method``):

* ``kmeans``: over-clustering with a number of clusters a person is willing to name:
  ``n_clusters``, or ``auto`` = one cluster per ``cells_per_cluster`` cells, between
  ``min_clusters`` and ``max_clusters``. MiniBatchKMeans past ``minibatch_above`` cells.
* ``leiden``: communities of the k-nearest-neighbour graph (igraph + leidenalg);
  ``resolution`` sets how fine they are.
* ``hdbscan``: density clusters (``min_cluster_size``, ``min_samples``, leaf or eom
  selection); cells in no cluster are noise.
* ``dbscan``: as upstream, ``min_samples`` 5 and ``eps`` from the elbow of the sorted
  k-distance curve (``auto``: the point farthest below the chord from its first to its
  last point), or a value.

On measured nuclei, DBSCAN and default HDBSCAN put almost every cell in one cluster;
the default is therefore ``kmeans`` (see docs/benchmarks.md, *Label efficiency*).

Noise (cluster id ``-1``) is kept and flagged; with ``noise: nearest`` noise cells also
join the cluster with the nearest centre, for labelling.

**Confidence** is scale-free: with ``d1`` the distance from a cell to its own cluster's
centre and ``d2`` to the nearest other centre, ``(d2 - d1) / (d2 + d1)`` clipped to
[0, 1] (1 at the centre, 0 on the boundary), times HDBSCAN's membership probability
where there is one. Noise cells have 0; a lone cluster gives 1. Multiplying all
coordinates by any factor leaves it unchanged (the upstream ``1 / (1 + distance)``
did not).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from histocluster.clustering.compute_backend import Device, to_numpy, use_gpu
from histocluster.clustering.settings import ClusterSettings, KMeansSettings

if TYPE_CHECKING:  # sklearn is imported where it is used (cheap `kedro` start-up)
    from sklearn.neighbors import KNeighborsClassifier

logger = logging.getLogger(__name__)

NOISE = -1
#: The clusters table (``clusters``): one row per cell, whether made by a clustering or by
#: placing cells in a saved one (the ``apply`` pipeline).
CLUSTER_COLUMNS = ["cell_id", "slide_id", "tile_id", "cluster_id", "is_noise", "confidence", "map_x", "map_y"]


@dataclass
class ClusterModel:
    """A fitted clustering that can place new cells (in the same reduced space):
    :meth:`predict` votes among the nearest of up to ``max_points`` kept training cells."""

    method: str
    cluster_ids: np.ndarray
    centres: np.ndarray
    knn: KNeighborsClassifier | None = None
    settings: dict = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cluster id, confidence) of new cells."""
        x = np.asarray(x, dtype=np.float32)
        if self.knn is None or len(x) == 0:
            return np.full(len(x), NOISE), np.zeros(len(x))
        labels = self.knn.predict(x)
        return labels, centre_margin(x, labels, self.cluster_ids, self.centres)


@dataclass
class ClusterResult:
    labels: np.ndarray  # cluster id per cell; NOISE unless noise joined a cluster
    is_noise: np.ndarray
    confidence: np.ndarray
    model: ClusterModel
    messages: list[str] = field(default_factory=list)


def kdistance_elbow(x: np.ndarray, k: int, max_points: int = 50_000, seed: int = 0) -> float:
    """DBSCAN's eps from the elbow of the sorted distances to the ``k``-th nearest
    neighbour (the cell itself counts as the first, as in scikit-learn's ``min_samples``):
    the point of the ascending curve farthest below the straight line from its first to
    its last point, both axes scaled to [0, 1]. Computed on a sample of ``max_points``."""
    from sklearn.neighbors import NearestNeighbors

    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
    k = min(k, len(x))
    distances = np.sort(NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)[0][:, -1])
    if len(distances) < 3 or distances[-1] <= distances[0]:
        return float(max(distances[-1], 1e-12))
    t = np.linspace(0.0, 1.0, len(distances))
    y = (distances - distances[0]) / (distances[-1] - distances[0])
    return float(max(distances[int(np.argmax(t - y))], 1e-12))


def auto_clusters(n: int, s: KMeansSettings) -> int:
    """The number of KMeans clusters for ``n`` cells."""
    if s.n_clusters == "auto":
        k = min(s.max_clusters, max(s.min_clusters, round(n / s.cells_per_cluster)))
    else:
        k = s.n_clusters
    return int(max(1, min(n, k)))


def centres_of(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster ids, mean of each cluster's cells), noise left out."""
    ids = np.unique(labels[labels != NOISE])
    centres = np.zeros((len(ids), x.shape[1]), dtype=np.float64)
    for i, c in enumerate(ids):
        centres[i] = x[labels == c].mean(axis=0)
    return ids, centres


def _squared_distances(part: np.ndarray, centres: np.ndarray) -> np.ndarray:
    part = part.astype(np.float64)
    d = (part**2).sum(axis=1)[:, None] - 2 * part @ centres.T + (centres**2).sum(axis=1)[None, :]
    return np.maximum(d, 0)


def nearest_centre(x: np.ndarray, centres: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Index of the nearest centre of every row, ``chunk`` rows at a time."""
    nearest = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), chunk):
        nearest[start : start + chunk] = _squared_distances(x[start : start + chunk], centres).argmin(axis=1)
    return nearest


def centre_margin(
    x: np.ndarray, labels: np.ndarray, ids: np.ndarray, centres: np.ndarray, chunk: int = 65_536
) -> np.ndarray:
    """Scale-free confidence ``(d2 - d1) / (d2 + d1)`` in [0, 1] (see the module doc),
    ``chunk`` cells at a time (memory: chunk × clusters distances, not cells × clusters)."""
    confidence = np.zeros(len(x), dtype=np.float64)
    member = np.flatnonzero(labels != NOISE)
    if len(ids) == 0 or len(member) == 0:
        return confidence
    if len(ids) == 1:
        confidence[member] = 1.0
        return confidence
    lookup = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
    lookup[ids] = np.arange(len(ids))
    for start in range(0, len(member), chunk):
        rows = member[start : start + chunk]
        own = lookup[labels[rows]]
        d2 = _squared_distances(x[rows], centres)
        line = np.arange(len(rows))
        d_own = np.sqrt(d2[line, own])
        d2[line, own] = np.inf
        d_other = np.sqrt(d2.min(axis=1))
        total = d_own + d_other
        confidence[rows] = np.clip(
            np.divide(d_other - d_own, total, out=np.ones_like(total), where=total > 0), 0, 1
        )
    return confidence


def _kmeans(x: np.ndarray, s: ClusterSettings, gpu: bool) -> np.ndarray:
    k = auto_clusters(len(x), s.kmeans)
    logger.info("KMeans: %d clusters for %d cells", k, len(x))
    if gpu:
        from cuml.cluster import KMeans as GpuKMeans

        return to_numpy(GpuKMeans(n_clusters=k, random_state=s.random_state, n_init=3).fit_predict(x))
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(x) > s.kmeans.minibatch_above:
        model = MiniBatchKMeans(n_clusters=k, random_state=s.random_state, n_init=3, batch_size=4096)
    else:
        model = KMeans(n_clusters=k, random_state=s.random_state, n_init=3)
    return model.fit_predict(x)


def _leiden(x: np.ndarray, s: ClusterSettings, gpu: bool) -> np.ndarray:
    import igraph
    import leidenalg
    from sklearn.neighbors import NearestNeighbors

    k = min(s.leiden.n_neighbors + 1, len(x))
    if gpu:
        from cuml.neighbors import NearestNeighbors as GpuNearestNeighbors

        neighbours = to_numpy(GpuNearestNeighbors(n_neighbors=k).fit(x).kneighbors(x, return_distance=False))
    else:
        neighbours = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x, return_distance=False)
    sources = np.repeat(np.arange(len(x)), k - 1)
    targets = neighbours[:, 1:].ravel()
    graph = igraph.Graph(n=len(x), edges=np.column_stack([sources, targets]).tolist(), directed=False)
    graph.simplify()  # mutual neighbours give one edge
    partition = leidenalg.find_partition(
        graph,
        leidenalg.RBConfigurationVertexPartition,
        resolution_parameter=s.leiden.resolution,
        seed=s.random_state,
    )
    return np.asarray(partition.membership)


def _hdbscan(x: np.ndarray, s: ClusterSettings, gpu: bool) -> tuple[np.ndarray, np.ndarray]:
    h = s.hdbscan
    min_cluster_size = min(h.min_cluster_size, len(x))
    kwargs = dict(
        min_cluster_size=max(2, min_cluster_size),
        min_samples=None if h.min_samples is None else min(h.min_samples, len(x)),
        cluster_selection_method=h.cluster_selection_method,
    )
    if gpu:
        from cuml.cluster.hdbscan import HDBSCAN as GpuHDBSCAN

        model = GpuHDBSCAN(**kwargs).fit(x)
    else:
        import hdbscan

        model = hdbscan.HDBSCAN(**kwargs).fit(x)
    return to_numpy(model.labels_), to_numpy(model.probabilities_)


def _dbscan(x: np.ndarray, s: ClusterSettings, gpu: bool) -> np.ndarray:
    d = s.dbscan
    eps = (
        kdistance_elbow(x, d.min_samples, d.max_points_for_eps, s.random_state) if d.eps == "auto" else d.eps
    )
    logger.info(
        "DBSCAN: eps %.4g (%s), min_samples %d",
        eps,
        d.eps if d.eps != "auto" else "k-distance elbow",
        d.min_samples,
    )
    if gpu:
        from cuml.cluster import DBSCAN as GpuDBSCAN

        return to_numpy(GpuDBSCAN(eps=eps, min_samples=d.min_samples).fit_predict(x))
    from sklearn.cluster import DBSCAN

    return DBSCAN(eps=eps, min_samples=d.min_samples).fit_predict(x)


def _cluster_once(x: np.ndarray, s: ClusterSettings, gpu: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (noise = -1) and, for HDBSCAN, membership probabilities of one group of
    at least two cells that are not all identical."""
    if s.method == "kmeans":
        return _kmeans(x, s, gpu), None
    if s.method == "leiden":
        return _leiden(x, s, gpu), None
    if s.method == "hdbscan":
        return _hdbscan(x, s, gpu)
    return _dbscan(x, s, gpu), None


def cluster_cells(
    x: np.ndarray, slide_ids: np.ndarray, settings: ClusterSettings, device: Device = "cpu"
) -> ClusterResult:
    """Cluster ``x`` (cells × dims), across all slides or slide by slide.

    Cluster ids are 0, 1, … across the whole result (per-slide clusters are numbered
    one slide after the other), largest cluster first; noise is ``-1``. Problems a user
    should know of (all noise, identical cells, too few cells) are logged and returned
    in ``messages``.
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    messages: list[str] = []
    labels = np.full(n, NOISE, dtype=np.int64)
    probabilities = np.ones(n)
    if n == 0:
        messages.append("no cells to cluster: the outputs are empty")
    else:
        gpu = use_gpu(device, settings.method) if settings.method != "leiden" else False
        if settings.method == "leiden" and device != "cpu":
            logger.info("leiden: CPU graph partition (igraph/leidenalg; cuML has no Leiden)")
        groups = (
            {"all slides": np.arange(n)}
            if settings.scope == "global"
            else _group_indices(np.asarray(slide_ids))
        )
        offset = 0
        for group, index in groups.items():
            part = x[index]
            identical = len(part) > 1 and np.ptp(part, axis=0).max(initial=0.0) == 0
            if identical:
                messages.append(f"{group}: all {len(part)} cells have the same features: one cluster")
            if settings.method == "dbscan" and len(part) < settings.dbscan.min_samples:
                messages.append(
                    f"{group}: {len(part)} cells, fewer than dbscan.min_samples ({settings.dbscan.min_samples}): "
                    "all noise"
                )
                continue
            if len(part) == 1 or identical:  # one cell, or cells nothing tells apart: one cluster
                found, proba = np.zeros(len(part), dtype=np.int64), None
            else:
                found, proba = _cluster_once(part, settings, gpu)
            found = np.asarray(found, dtype=np.int64)
            kept = found != NOISE
            labels[index[kept]] = found[kept] + offset
            if proba is not None:
                probabilities[index] = proba
            offset = labels.max() + 1 if (labels != NOISE).any() else 0
    labels = _by_size(labels)
    is_noise = labels == NOISE
    if n and is_noise.all():
        messages.append(f"all {n} cells are noise ({settings.method}): no cluster to label")
    elif is_noise.any():
        logger.info("%d of %d cells are noise (%.1f%%)", is_noise.sum(), n, 100 * is_noise.mean())
    ids, centres = centres_of(x, labels)
    if settings.noise == "nearest" and is_noise.any() and len(ids):
        nearest = nearest_centre(x[is_noise], centres)
        labels[is_noise] = ids[nearest]
        logger.info("%d noise cells joined the cluster with the nearest centre", is_noise.sum())
        ids, centres = centres_of(x, labels)
    confidence = centre_margin(x, labels, ids, centres) * probabilities
    confidence[is_noise] = 0.0
    for message in messages:
        logger.warning("Clustering: %s", message)
    model = ClusterModel(
        settings.method, ids, centres.astype(np.float32), _assigner(x, labels, settings.random_state)
    )
    return ClusterResult(labels, is_noise, confidence, model, messages)


def _group_indices(groups: np.ndarray) -> dict:
    order = np.argsort(groups, kind="stable")
    values, starts = np.unique(np.asarray(groups)[order], return_index=True)
    return dict(zip(values, np.split(order, starts[1:]), strict=True))


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0, 1, … from the largest; noise stays -1."""
    kept = labels != NOISE
    if not kept.any():
        return labels
    ids, counts = np.unique(labels[kept], return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    mapping = np.full(labels.max() + 1, NOISE, dtype=np.int64)
    mapping[order] = np.arange(len(order))
    out = labels.copy()
    out[kept] = mapping[labels[kept]]
    return out


def _assigner(
    x: np.ndarray, labels: np.ndarray, seed: int, max_points: int = 100_000
) -> KNeighborsClassifier | None:
    from sklearn.neighbors import KNeighborsClassifier

    kept = np.flatnonzero(labels != NOISE)
    if len(kept) == 0:
        return None
    if len(kept) > max_points:
        kept = np.random.default_rng(seed).choice(kept, max_points, replace=False)
    return KNeighborsClassifier(n_neighbors=min(5, len(kept))).fit(x[kept], labels[kept])
