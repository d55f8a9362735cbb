"""The ``morphology`` embedder: a cell's measurements, texture and neighbourhood.

The ``morphology`` embedding of a cell is

1. its shape and stain measurements from the cell table,
2. optionally (``texture``) its intensity, texture and ring features, which the
   segmentation pass put in the cell table (:mod:`histocluster.features.texture`),
3. optionally (``context_neighbours`` = k > 0) the mean of those features over its k
   nearest cells on the same slide, and the distance to the k-th (local density):
   what surrounds a cell tells an epithelial nucleus in a gland from a stromal one,

each column standardised (zero mean, unit variance, clipped to ±``clip`` so that one
huge artefact does not dominate a direction; constant columns become 0) — by default
within each slide first (``within="slide"``, the pipeline's ``clustering.standardise_within``):
on the shared slides, with
standardisation over all cells every one of 100 clusters held cells of a single slide
(stain and scanner differences dominate); within slides 78 of 100 span both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from histocluster.errors import UserInputError
from histocluster.features.scaling import standardise, standardise_within
from histocluster.features.settings import MorphologySettings
from histocluster.features.texture import PIXEL_COLUMNS
from histocluster.segmentation.measurements import SHAPE_COLUMNS, STAIN_COLUMNS

MEASURED_COLUMNS = SHAPE_COLUMNS + STAIN_COLUMNS


def neighbourhood_context(x: np.ndarray, points_um: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """Per cell: the mean of ``x`` over its ``k`` nearest cells (by centroid, within its
    group, i.e. its slide) and ``log(1 + distance to the k-th)`` in µm. Cells alone in
    their group get zeros."""
    from sklearn.neighbors import NearestNeighbors

    out = np.zeros((len(x), x.shape[1] + 1), dtype=np.float32)
    for _, index in pd.Series(groups).groupby(groups, sort=False).indices.items():
        kk = min(k + 1, len(index))
        if kk < 2:
            continue
        distance, neighbours = (
            NearestNeighbors(n_neighbors=kk).fit(points_um[index]).kneighbors(points_um[index])
        )
        out[index, :-1] = x[index][neighbours[:, 1:]].mean(axis=1)
        out[index, -1] = np.log1p(distance[:, -1])
    return out


class MissingTextureError(UserInputError):
    """The embedding wants texture features the cell table does not have."""


def morphology_embedding(
    cells: pd.DataFrame,
    mpp: np.ndarray,
    settings: MorphologySettings,
    within: str = "slide",
) -> tuple[np.ndarray, list[str]]:
    """The ``morphology`` embedding (float32, one row per cell) and its column names.

    Args:
        cells: the cell table (shape and stain columns, centroids, ``slide_id``; with
            ``texture``, also :data:`~histocluster.features.texture.PIXEL_COLUMNS`).
        mpp: µm per level-0 pixel of each cell's slide (for the neighbourhood in µm).
        settings: which parts to include.
        within: ``slide`` standardises within each slide first
            (:func:`~histocluster.features.scaling.standardise_within`), ``all`` over all
            cells only.
    """
    columns = list(MEASURED_COLUMNS)
    if settings.texture:
        missing = [c for c in PIXEL_COLUMNS if c not in cells.columns]
        if missing:
            raise MissingTextureError(
                f"The cell table has no texture features ({len(missing)} columns missing, e.g. {missing[0]}): "
                "set segmentation.cell_features.texture: true and rerun the segmentation, or set "
                "clustering.morphology.texture: false"
            )
        columns += PIXEL_COLUMNS
    x = np.array(cells[columns], dtype=np.float32)  # own, writeable copy
    groups = cells["slide_id"].to_numpy() if within == "slide" else None
    x = standardise_within(x, groups, settings.clip, inplace=True)
    if settings.context_neighbours:
        points = cells[["centroid_x", "centroid_y"]].to_numpy(dtype=np.float64) * np.asarray(mpp)[:, None]
        context = neighbourhood_context(x, points, cells["slide_id"].to_numpy(), settings.context_neighbours)
        x = np.hstack([x, standardise(context, settings.clip)])
        columns += [f"context_{c}" for c in columns] + ["context_distance"]
    return x, columns
