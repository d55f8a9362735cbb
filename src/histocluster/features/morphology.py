"""Cell embeddings: the ``morphology`` embedder and the combination of embedders.

The ``morphology`` embedding of a cell is

1. its shape and stain measurements from the cell table,
2. optionally (``texture``) intensity, texture and ring features from its pixels
   (:mod:`histocluster.features.texture`),
3. optionally (``context_neighbours`` = k > 0) the mean of those features over its k
   nearest cells on the same slide, and the distance to the k-th (local density):
   what surrounds a cell tells an epithelial nucleus in a gland from a stromal one,

each column standardised (zero mean, unit variance, clipped to ±``clip`` so that one
huge artefact does not dominate a direction; constant columns become 0) — by default
within each slide first (``within="slide"``, the pipeline's ``clustering.standardise_within``):
on the shared slides, with
standardisation over all cells every one of 100 clusters held cells of a single slide
(stain and scanner differences dominate); within slides 78 of 100 span both.

Embedders are combined by standardising each block, scaling it by
``weight / sqrt(columns)`` (so a 2048-d ResNet block and a 50-d morphology block weigh
what their weights say, not what their widths say) and writing them side by side into
one float32 matrix allocated once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as settings_dataclass
from sklearn.neighbors import NearestNeighbors
from tqdm.auto import tqdm

from histocluster.features.cell_pixels import TileCells, iter_tile_cells
from histocluster.features.texture import PIXEL_COLUMNS, pixel_features
from histocluster.segmentation.measurements import SHAPE_COLUMNS, STAIN_COLUMNS

logger = logging.getLogger(__name__)

MEASURED_COLUMNS = SHAPE_COLUMNS + STAIN_COLUMNS


@settings_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MorphologySettings:
    """Settings of the ``morphology`` embedder."""

    texture: bool = Field(True, description="add intensity, texture and ring features (reads the pixels)")
    ring_um: float = Field(2.0, gt=0, description="width of the ring around each cell, µm")
    context_neighbours: int = Field(8, ge=0, description="k nearest cells averaged as context; 0 = none")
    clip: float = Field(5.0, gt=0, description="standardised values are clipped to ±clip")


@dataclass
class Embeddings:
    """One float32 row per cell: ``matrix[i]`` belongs to ``cell_ids[i]``."""

    cell_ids: np.ndarray
    matrix: np.ndarray
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cell_ids = np.asarray(self.cell_ids, dtype=object)
        if self.matrix.ndim != 2 or len(self.matrix) != len(self.cell_ids):
            raise ValueError(f"{len(self.cell_ids)} cell ids for a matrix of shape {self.matrix.shape}")
        if not self.columns:
            self.columns = [f"e{k}" for k in range(self.matrix.shape[1])]

    def __len__(self) -> int:
        return len(self.cell_ids)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def standardise_within(
    x: np.ndarray, groups: np.ndarray | None, clip: float = 5.0, inplace: bool = False
) -> np.ndarray:
    """:func:`standardise` within each group (slide) first, then over all rows. Groups
    stored as contiguous rows (as the cell table is, slide after slide) are done in place;
    with one group (or ``groups`` None) this is plain :func:`standardise`."""
    x = writeable_float32(x, inplace)
    if groups is not None and len(pd.unique(groups)) > 1:
        for _, index in pd.Series(groups).groupby(np.asarray(groups), sort=False).indices.items():
            if index[-1] - index[0] + 1 == len(index):
                standardise(x[index[0] : index[-1] + 1], clip, inplace=True)
            else:
                x[index] = standardise(x[index], clip)
    return standardise(x, clip, inplace=True)


def writeable_float32(x: np.ndarray, inplace: bool) -> np.ndarray:
    """``x`` itself when it may be changed in place (writeable float32), else a float32 copy."""
    if inplace and isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.writeable:
        return x
    return np.array(x, dtype=np.float32)


def standardise(x: np.ndarray, clip: float = 5.0, inplace: bool = False, chunk: int = 65_536) -> np.ndarray:
    """Columns to zero mean and unit variance (float32), clipped to ±clip; constant
    columns and non-finite values become 0. With ``inplace``, a writeable float32 ``x``
    (a column slice of a larger matrix too) is changed and returned; otherwise ``x`` is
    left as is. Works through ``chunk`` rows at a time, so in place it needs no memory
    beyond one chunk whatever the matrix's size."""
    x = writeable_float32(x, inplace)
    n, d = x.shape
    count, total, squares = np.zeros(d), np.zeros(d), np.zeros(d)
    for start in range(0, n, chunk):
        part = x[start : start + chunk].astype(np.float64)
        finite = np.isfinite(part)
        part[~finite] = 0.0
        count += finite.sum(axis=0)
        total += part.sum(axis=0)
        squares += (part**2).sum(axis=0)
    mean = np.divide(total, count, out=np.zeros(d), where=count > 0)
    var = np.divide(squares, count, out=np.zeros(d), where=count > 0) - mean**2
    std = np.sqrt(np.maximum(var, 0.0))
    scale = np.where(std > 1e-6 * np.maximum(np.abs(mean), 1e-6), std, np.inf).astype(np.float32)
    mean = mean.astype(np.float32)
    for start in range(0, n, chunk):
        part = x[start : start + chunk]
        with np.errstate(invalid="ignore"):  # inf - inf: non-finite inputs become 0 below
            part -= mean
            part /= scale
        np.nan_to_num(part, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.clip(part, -clip, clip, out=part)
    return x


def neighbourhood_context(x: np.ndarray, points_um: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """Per cell: the mean of ``x`` over its ``k`` nearest cells (by centroid, within its
    group, i.e. its slide) and ``log(1 + distance to the k-th)`` in µm. Cells alone in
    their group get zeros."""
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


def cell_pixel_features(
    slides: pd.DataFrame, tiles: pd.DataFrame, cells: pd.DataFrame, ring_um: float
) -> pd.DataFrame:
    """:data:`~histocluster.features.texture.PIXEL_COLUMNS` for every cell of the table
    (same row order), read tile by tile. Cells whose tile or slide cannot be read get
    NaN, and are reported."""
    cells = cells.reset_index(drop=True)
    out = np.full((len(cells), len(PIXEL_COLUMNS)), np.nan, dtype=np.float32)
    progress = tqdm(total=len(cells), desc="Texture features", unit="cell")
    for item in iter_tile_cells(slides, tiles, cells):
        progress.update(len(item.rows) if isinstance(item, TileCells) else len(item[1]))
        progress.set_postfix(slide=item.tile["slide_id"] if isinstance(item, TileCells) else item[0])
        if not isinstance(item, TileCells):
            what, rows, error = item
            logger.error(
                "%s: cannot be read (%s); its %d cells get no texture features", what, error, len(rows)
            )
            continue
        features = pixel_features(item.labels, item.rgb, item.mpp, ring_um)
        # label k + 1 is row k of this tile's cells; a cell too small to cover a pixel
        # centre keeps NaN (standardisation turns it into the mean).
        out[item.rows[features["label"].to_numpy() - 1]] = features[PIXEL_COLUMNS].to_numpy()
    progress.close()
    return pd.DataFrame(out, columns=PIXEL_COLUMNS)


def morphology_embedding(
    cells: pd.DataFrame,
    mpp: np.ndarray,
    settings: MorphologySettings,
    pixels: pd.DataFrame | None = None,
    within: str = "slide",
) -> tuple[np.ndarray, list[str]]:
    """The ``morphology`` embedding (float32, one row per cell) and its column names.

    Args:
        cells: the cell table (shape and stain columns, centroids, ``slide_id``).
        mpp: µm per level-0 pixel of each cell's slide (for the neighbourhood in µm).
        settings: which parts to include.
        pixels: :func:`cell_pixel_features` of the same cells, when ``texture`` is on.
        within: ``slide`` standardises within each slide first (:func:`standardise_within`),
            ``all`` over all cells only.
    """
    columns = list(MEASURED_COLUMNS)
    x = np.array(cells[MEASURED_COLUMNS], dtype=np.float32)  # own, writeable copy
    if settings.texture:
        if pixels is None:
            raise ValueError("texture features asked for but no pixel features given")
        x = np.hstack([x, pixels[PIXEL_COLUMNS].to_numpy(dtype=np.float32)])
        columns += PIXEL_COLUMNS
    groups = cells["slide_id"].to_numpy() if within == "slide" else None
    x = standardise_within(x, groups, settings.clip, inplace=True)
    if settings.context_neighbours:
        points = cells[["centroid_x", "centroid_y"]].to_numpy(dtype=np.float64) * np.asarray(mpp)[:, None]
        context = neighbourhood_context(x, points, cells["slide_id"].to_numpy(), settings.context_neighbours)
        x = np.hstack([x, standardise(context, settings.clip)])
        columns += [f"context_{c}" for c in columns] + ["context_distance"]
    return x, columns


def combine(blocks: list[tuple[np.ndarray, float]], out: np.ndarray | None = None) -> np.ndarray:
    """Standardised blocks side by side, block ``b`` scaled by ``weight_b / sqrt(dim_b)``,
    written into ``out`` (allocated here when not given). A block that already is a view
    of ``out`` at its place is scaled in place, not copied."""
    n = len(blocks[0][0])
    total = sum(block.shape[1] for block, _ in blocks)
    if out is None:
        out = np.empty((n, total), dtype=np.float32)
    start = 0
    for block, weight in blocks:
        d = block.shape[1]
        target = out[:, start : start + d]
        if not np.shares_memory(target, block):
            target[...] = block
        target *= weight / np.sqrt(d)
        start += d
    return out


def keep_rows(matrix: np.ndarray, keep: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """The rows of ``matrix`` where ``keep`` is true, moved up in place (no second copy
    of the matrix); returns a view of the first ``keep.sum()`` rows."""
    index = np.flatnonzero(keep)
    for start in range(0, len(index), chunk):
        # Sources index[i] >= i: later sources are never overwritten by earlier moves.
        matrix[start : start + chunk] = matrix[index[start : start + chunk]]
    return matrix[: len(index)]
