"""Dimension reduction of cell embeddings before clustering, and the 2-D cell map.

``normalize`` (upstream ``--cluster_normalize``): ``none``, ``standard`` (columns to zero
mean, unit variance) or ``l2`` (each row to unit length). Then ``method``: ``umap``
(upstream knobs: ``n_components`` 50, ``n_neighbors`` 15, ``min_dist`` 0.1, ``metric``),
``pca`` or ``none``. umap-learn and scikit-learn on the CPU, cuML on the GPU.

The fitted :class:`Reducer` keeps everything needed to place new cells in the same
space later (``reducer.transform(new_embeddings)``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from histocluster.clustering.compute_backend import Device, to_numpy, use_gpu
from histocluster.clustering.settings import ReductionSettings

logger = logging.getLogger(__name__)


@dataclass
class Reducer:
    """A fitted normalisation + reduction; :meth:`transform` applies it to new rows."""

    normalize: str
    method: str
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    model: Any = None

    def _normalise(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.normalize == "standard":
            return (x - self.mean) / self.scale
        if self.normalize == "l2":
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x

    def transform(self, x: np.ndarray) -> np.ndarray:
        """New embeddings in the reduced space (float32)."""
        x = self._normalise(x)
        if self.model is None:
            return x
        return np.asarray(to_numpy(self.model.transform(x)), dtype=np.float32)


def _make_model(
    settings: ReductionSettings, n: int, d: int, components: int, gpu: bool, umap_options: dict | None = None
):
    if settings.method == "pca":
        if gpu:
            from cuml.decomposition import PCA as GpuPCA

            return GpuPCA(n_components=components)
        from sklearn.decomposition import PCA

        return PCA(n_components=components, random_state=settings.random_state)
    neighbours = min(settings.n_neighbors, n - 1)
    kwargs = dict(
        n_components=components,
        n_neighbors=neighbours,
        min_dist=settings.min_dist,
        metric=settings.metric,
        random_state=settings.random_state,
    )
    if gpu:
        from cuml.manifold import UMAP as GpuUMAP

        return GpuUMAP(**kwargs)
    import umap

    # A fixed random_state makes umap-learn single-threaded; None lets it use every core.
    return umap.UMAP(
        **kwargs,
        **(umap_options or {}),
        low_memory=True,
        n_jobs=1 if settings.random_state is not None else -1,
    )


#: Up to this many cells, UMAP's neighbour graph is computed exactly by scikit-learn
#: (brute force, a few seconds at 50,000 cells) instead of by pynndescent, whose numba
#: code compiles afresh in every process (~35 s on a 2-core machine: most of a 10,000-cell
#: map's cost). Above it, pynndescent's approximate search is cheaper than O(n²).
EXACT_NEIGHBOURS_MAX = 60_000

_SKLEARN_METRICS = {"euclidean", "manhattan", "cosine", "chebyshev", "minkowski"}


def exact_neighbours(x: np.ndarray, k: int, metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest rows of ``x``, itself included (first, at distance 0, as
    UMAP's own search returns it): ``(indices, distances)``, ``int64`` and ``float32``."""
    from sklearn.neighbors import NearestNeighbors

    distances, indices = NearestNeighbors(n_neighbors=k, metric=metric).fit(x).kneighbors(x)
    # Exact duplicates may list another row before the row itself; put the row first.
    rows = np.arange(len(x))
    self_at = indices == rows[:, None]
    missing = ~self_at.any(axis=1)
    indices[missing, -1] = rows[missing]
    distances[missing, -1] = 0.0
    order = np.argsort(~(indices == rows[:, None]), axis=1, kind="stable")
    indices = np.take_along_axis(indices, order, axis=1)
    distances = np.take_along_axis(distances, order, axis=1)
    return indices.astype(np.int64), distances.astype(np.float32)


def fit_reduce(
    x: np.ndarray,
    settings: ReductionSettings,
    device: Device = "cpu",
    components: int | None = None,
    transformable: bool = True,
    umap_options: dict | None = None,
) -> tuple[Reducer, np.ndarray]:
    """Fit the reduction on ``x`` (cells × features) and return it with ``x`` reduced.

    ``components`` overrides ``settings.n_components`` (the 2-D map uses 2). Inputs too
    small for the method (UMAP needs more cells than 2 + components; PCA at most
    min(cells, features) components) are reduced as far as they can be, with a log line.
    ``transformable=False`` says the fitted UMAP model will never place new rows (its
    ``transform`` needs a search index): up to :data:`EXACT_NEIGHBOURS_MAX` rows its
    neighbour graph then comes from scikit-learn, without pynndescent's compile.
    ``umap_options``: further ``umap.UMAP`` arguments on the CPU (``n_epochs``, ``init``).
    """
    n, d = x.shape
    reducer = Reducer(settings.normalize, settings.method)
    if settings.normalize == "standard":
        reducer.mean = x.mean(axis=0) if n else np.zeros(d, np.float32)
        std = x.std(axis=0) if n else np.ones(d, np.float32)
        reducer.scale = np.where(std > 0, std, 1.0).astype(np.float32)
    z = reducer._normalise(x)
    want = settings.n_components if components is None else components
    if settings.method == "none" or n == 0:
        reducer.method = "none"
        return reducer, z
    if settings.method == "pca":
        components_ = min(want, n, d)
    else:
        components_ = want
        if n < components_ + 3 or n <= 3:
            logger.warning(
                "UMAP needs more cells than %d + 2 to give %d components; %d cells are used as they are",
                components_,
                components_,
                n,
            )
            reducer.method = "none"
            return reducer, z
    gpu = use_gpu(device, settings.method.upper())
    reducer.model = _make_model(settings, n, d, components_, gpu, umap_options)
    if (
        settings.method == "umap"
        and not transformable
        and not gpu
        and n <= EXACT_NEIGHBOURS_MAX
        and settings.metric in _SKLEARN_METRICS
    ):
        # The graph from scikit-learn: no pynndescent compile, and no search index kept.
        indices, distances = exact_neighbours(z, reducer.model.n_neighbors, settings.metric)
        reducer.model.precomputed_knn = (indices, distances, None)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*precomputed_knn.*", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*n_jobs value.*", category=UserWarning)
            reduced = reducer.model.fit_transform(z)
    else:
        reduced = reducer.model.fit_transform(z)
    return reducer, np.asarray(to_numpy(reduced), dtype=np.float32)


@dataclass
class NeighbourPlacement:
    """Places new cells on an existing 2-D map at the distance-weighted mean position of
    their ``k`` nearest mapped cells (in the reduced space). Cheap to keep and to pickle,
    unlike a UMAP model with its search index (pickling one compiles numba code for
    about a minute)."""

    model: Any

    @classmethod
    def fit(
        cls, reduced: np.ndarray, coords: np.ndarray, k: int = 10, max_points: int = 100_000, seed: int = 0
    ) -> NeighbourPlacement:
        from sklearn.neighbors import KNeighborsRegressor

        index = np.arange(len(reduced))
        if len(index) > max_points:
            index = np.random.default_rng(seed).choice(index, max_points, replace=False)
        regressor = KNeighborsRegressor(n_neighbors=min(k, len(index)), weights="distance")
        return cls(regressor.fit(reduced[index], coords[index]))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(np.asarray(x, dtype=np.float32)).astype(np.float32)


def cell_map(
    reduced: np.ndarray, settings: ReductionSettings, device: Device = "cpu"
) -> tuple[Reducer, np.ndarray]:
    """2-D coordinates for the cell map: the reduced space itself when it is already 2-D
    or less, else a 2-D UMAP (or PCA: ``map_method``) of it. UMAP is fitted on at most
    ``map_max_cells`` cells (a random sample); the others, and new cells later, are placed
    by :class:`NeighbourPlacement` (PCA places everything exactly).

    The UMAP map's neighbour graph is exact (scikit-learn, no pynndescent compile), it
    starts from a PCA layout (``map_init``) and runs ``map_epochs`` epochs (default 500
    up to 10,000 cells, 100 above). On 45,940 cells of the big-slide fixture this drew the
    map in 9 s instead of 57 s, with neighbourhoods at least as faithful
    (``bench/bench_cell_map.py``: trustworthiness 0.94 against 0.89, share of map
    neighbours in the same cluster 0.66 against 0.67)."""
    n, d = reduced.shape
    if d <= 2:
        coords = np.zeros((n, 2), np.float32)
        coords[:, :d] = reduced
        return Reducer("none", "none"), coords
    map_settings = ReductionSettings(
        normalize="none",
        method=settings.map_method,
        n_components=2,
        n_neighbors=settings.n_neighbors,
        min_dist=settings.min_dist,
        metric="euclidean",
        random_state=settings.random_state,
    )
    seed = settings.random_state or 0
    sample = None
    if settings.map_method == "umap" and n > settings.map_max_cells:
        sample = np.sort(np.random.default_rng(seed).choice(n, settings.map_max_cells, replace=False))
    fitted_cells = n if sample is None else len(sample)
    epochs = settings.map_epochs or (500 if fitted_cells <= 10_000 else 100)
    reducer, fitted = fit_reduce(
        reduced if sample is None else reduced[sample],
        map_settings,
        device,
        transformable=False,
        umap_options={"n_epochs": epochs, "init": settings.map_init},
    )
    if reducer.method == "umap":
        reducer.model = NeighbourPlacement.fit(
            reduced if sample is None else reduced[sample], fitted, seed=seed
        )
    if sample is None:
        coords = fitted
    else:
        logger.info(
            "Cell map: UMAP on %d of %d cells, the others placed by their nearest neighbours", len(sample), n
        )
        coords = np.empty((n, fitted.shape[1]), np.float32)
        rest = np.ones(n, dtype=bool)
        rest[sample] = False
        coords[sample] = fitted
        for start in range(0, int(rest.sum()), 100_000):
            index = np.flatnonzero(rest)[start : start + 100_000]
            coords[index] = reducer.model.transform(reduced[index])
    if coords.shape[1] != 2:
        out = np.zeros((n, 2), np.float32)
        out[:, : min(2, coords.shape[1])] = coords[:, :2]
        coords = out
    return reducer, coords
