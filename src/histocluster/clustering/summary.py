"""Representative cells of each cluster, and the cluster summary table.

Representatives are what a person (or a vision-language model) looks at to name a
cluster, so they must be typical of it *and* not all from one spot: a cluster whose nine
best cells sit in one tile may be one odd patch of tissue. :func:`pick_representatives`
takes the ``pool`` × ``n`` most confident cells of a cluster and then picks greedily:
each next cell is the most confident of those from the least used slide, and within it
the least used tile.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.clustering.clusterers import NOISE
from histocluster.features.cell_pixels import cell_crops_by_id
from histocluster.segmentation.measurements import SHAPE_COLUMNS, STAIN_COLUMNS

REPRESENTATIVE_COLUMNS = ["cluster_id", "rank", "cell_id", "slide_id", "tile_id", "confidence"]
SUMMARY_COLUMNS = [
    "cluster_id",
    "size",
    "fraction",
    "noise",
    "n_slides",
    "slide_counts",
    "mean_confidence",
    *[f"mean_{c}" for c in SHAPE_COLUMNS + STAIN_COLUMNS],
    "map_x",
    "map_y",
    "representatives",
]


def pick_representatives(clusters: pd.DataFrame, n: int, pool: int = 5) -> pd.DataFrame:
    """Up to ``n`` representatives per cluster (noise has none).

    Args:
        clusters: one row per cell with ``cell_id``, ``slide_id``, ``tile_id``,
            ``cluster_id`` and ``confidence``.
        n: representatives per cluster.
        pool: candidates are the ``pool * n`` most confident cells of the cluster.

    Returns:
        :data:`REPRESENTATIVE_COLUMNS`, ranked 0, 1, … within each cluster.
    """
    rows = []
    members = clusters[clusters["cluster_id"] != NOISE]
    for cluster_id, group in members.groupby("cluster_id", sort=True):
        candidates = group.sort_values(["confidence", "cell_id"], ascending=[False, True]).head(pool * n)
        slides = candidates["slide_id"].to_numpy()
        tiles = candidates["tile_id"].to_numpy()
        free = np.ones(len(candidates), dtype=bool)
        used_slide: dict[str, int] = {}
        used_tile: dict[str, int] = {}
        for rank in range(min(n, len(candidates))):
            # Candidates are in confidence order, so the first minimum is the most confident.
            cost = [
                (used_slide.get(slides[i], 0), used_tile.get(tiles[i], 0)) if free[i] else (np.inf, np.inf)
                for i in range(len(candidates))
            ]
            best = min(range(len(candidates)), key=cost.__getitem__)
            free[best] = False
            used_slide[slides[best]] = used_slide.get(slides[best], 0) + 1
            used_tile[tiles[best]] = used_tile.get(tiles[best], 0) + 1
            row = candidates.iloc[best]
            rows.append(
                (cluster_id, rank, row["cell_id"], slides[best], tiles[best], float(row["confidence"]))
            )
    return pd.DataFrame(rows, columns=REPRESENTATIVE_COLUMNS).astype({"cluster_id": "int64", "rank": "int64"})


def summarise(cells: pd.DataFrame, clusters: pd.DataFrame, representatives: pd.DataFrame) -> pd.DataFrame:
    """One row per cluster (noise as cluster ``-1`` when there is any): size, share of
    the cells, how many slides it spans and its count on each (``slide_counts``, JSON),
    mean confidence, mean shape and stain measurements, centre on the 2-D map and the
    ids of its representatives."""
    measured = SHAPE_COLUMNS + STAIN_COLUMNS
    table = clusters.merge(cells[["cell_id", *measured]], on="cell_id", how="left")
    if table.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in SUMMARY_COLUMNS})
    grouped = table.groupby("cluster_id", sort=True)
    summary = grouped.agg(
        size=("cell_id", "size"),
        n_slides=("slide_id", "nunique"),
        mean_confidence=("confidence", "mean"),
        map_x=("map_x", "mean"),
        map_y=("map_y", "mean"),
        **{f"mean_{c}": (c, "mean") for c in measured},
    ).reset_index()
    summary["fraction"] = summary["size"] / len(table)
    summary["noise"] = summary["cluster_id"] == NOISE
    counts = table.groupby(["cluster_id", "slide_id"]).size()
    summary["slide_counts"] = [
        json.dumps({str(k): int(v) for k, v in counts.loc[c].items()}) for c in summary["cluster_id"]
    ]
    reps = representatives.sort_values(["cluster_id", "rank"]).groupby("cluster_id")["cell_id"].agg(list)
    summary["representatives"] = [list(reps.get(c, [])) for c in summary["cluster_id"]]
    return summary[SUMMARY_COLUMNS]


def crop_key(cluster_id: int, rank: int, cell_id: str) -> str:
    """Partition key of a representative's crop: ``<cluster_id>/<rank>_<cell_id>``."""
    return f"{int(cluster_id)}/{int(rank):02d}_{cell_id}"


def crop_representatives(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    cells: pd.DataFrame,
    representatives: pd.DataFrame,
    crop_um: float,
    size: int,
) -> dict[str, Image.Image]:
    """Every representative's crop (``crop_um`` square around it, ``size`` px, outlined
    green), read from the slide once, keyed by :func:`crop_key`. Cells that cannot be read
    are logged and left out (:func:`~histocluster.features.cell_pixels.cell_crops_by_id`)."""
    wanted = cells[cells["cell_id"].isin(representatives["cell_id"])]
    crops = cell_crops_by_id(slides, tiles, wanted, crop_um, size) if len(wanted) else {}
    out = {}
    last_use = {cell_id: k for k, cell_id in enumerate(representatives["cell_id"])}
    for k, row in enumerate(representatives.itertuples()):
        if row.cell_id in crops:
            out[crop_key(row.cluster_id, row.rank, row.cell_id)] = Image.fromarray(crops[row.cell_id])
            if last_use[row.cell_id] == k:  # the array is copied: free it (1,000 crops are ~200 MB)
                del crops[row.cell_id]
    return out
