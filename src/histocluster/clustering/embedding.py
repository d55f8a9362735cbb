"""The combined embedding of the cell table: the configured embedders' blocks, each
standardised (within each slide by default) and weighted, side by side in one float32
matrix allocated once. Reads no pixels: the segmentation pass put the texture features
in the cell table and stored the network's features (ResNet-50 or the type network).

Blocks are combined by scaling each by ``weight / sqrt(columns)`` (so a 2048-d ResNet
block and a 50-d morphology block weigh what their weights say, not what their widths
say).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from histocluster.clustering.settings import ClusteringParams
from histocluster.errors import UserInputError
from histocluster.features.embeddings import Embeddings
from histocluster.features.morphology import morphology_embedding
from histocluster.features.scaling import combine, keep_rows, standardise_within

logger = logging.getLogger(__name__)


class MissingFeaturesError(UserInputError):
    """An embedder needs features the segmentation pass did not store."""


def level0_mpp(slides: pd.DataFrame, cells: pd.DataFrame) -> np.ndarray:
    """µm per level-0 pixel of each cell's slide."""
    mpp = slides.set_index("slide_id")[["mpp_x", "mpp_y"]].prod(axis=1) ** 0.5
    return cells["slide_id"].map(mpp).to_numpy(dtype=np.float64)


def _deep_rows(cells: pd.DataFrame, deep: Embeddings | None, name: str) -> np.ndarray:
    """Row of each cell in ``deep`` (-1 where it has none); ``deep`` must hold ``name``'s features."""
    if deep is None or len(deep) == 0:
        raise MissingFeaturesError(
            f"clustering.embedders has {name} but the segmentation pass stored no {name} features: "
            f"set segmentation.cell_features.deep: {name} and rerun the segmentation"
        )
    stored = str(deep.columns[0]).split(":")[0] if len(deep.columns) else ""
    if stored != name:
        raise MissingFeaturesError(
            f"clustering.embedders has {name} but the segmentation pass stored {stored or 'other'} "
            f"features: set segmentation.cell_features.deep: {name} and rerun the segmentation"
        )
    position = pd.Series(np.arange(len(deep)), index=pd.Index(deep.cell_ids))
    return position.reindex(cells["cell_id"].to_numpy()).fillna(-1).to_numpy(dtype=np.int64)


def copy_rows(source: np.ndarray, rows: np.ndarray, out: np.ndarray, chunk: int = 65_536) -> None:
    """``out[i] = source[rows[i]]`` (0 where ``rows[i]`` is -1), a chunk at a time, so a
    memory-mapped cells × 2048 matrix is never copied whole into a temporary."""
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        target = out[start : start + chunk]
        target[part >= 0] = source[part[part >= 0]]
        target[part < 0] = 0.0


def embed(
    slides: pd.DataFrame, cells: pd.DataFrame, deep: Embeddings | None, params: ClusteringParams
) -> Embeddings:
    """The combined embedding of ``cells`` (see the module doc). Cells without the network's
    features (their tile failed in the pass) are reported and left out."""
    cells = cells.reset_index(drop=True)
    if cells.empty:
        logger.warning("Clustering: the cell table is empty; no embeddings")
        return Embeddings(np.array([], dtype=object), np.zeros((0, 0), np.float32))
    usable = np.ones(len(cells), dtype=bool)
    blocks: list[tuple[np.ndarray, float]] = []
    names: list[str] = []
    if "morphology" in params.embedders:
        x, columns = morphology_embedding(
            cells, level0_mpp(slides, cells), params.morphology, within=params.standardise_within
        )
        blocks.append((x, params.embedders["morphology"]))
        names += [f"morphology:{c}" for c in columns]
    network = params.deep_embedder
    if network is None:
        matrix = blocks[0][0]
    else:
        rows = _deep_rows(cells, deep, network)
        usable &= rows >= 0
        # One matrix for everything: the network's features are copied into their columns,
        # standardised and weighted there; no second copy of cells × 2048 floats.
        start = sum(block.shape[1] for block, _ in blocks)
        matrix = np.empty((len(cells), start + deep.dim), dtype=np.float32)
        view = matrix[:, start:]
        copy_rows(deep.matrix, rows, view)
        groups = cells["slide_id"].to_numpy() if params.standardise_within == "slide" else None
        blocks.append((standardise_within(view, groups, inplace=True), params.embedders[network]))
        names += list(deep.columns)
        combine(blocks, out=matrix)
    if not usable.all():
        logger.error(
            "Clustering: %d of %d cells have no %s features (their tiles failed in the "
            "segmentation pass) and are left out",
            (~usable).sum(),
            len(cells),
            network,
        )
        matrix = keep_rows(matrix, usable)
    logger.info("Embedded %d cells: %d dims (%s)", usable.sum(), matrix.shape[1], ", ".join(params.embedders))
    return Embeddings(cells["cell_id"].to_numpy()[usable], matrix, names)
