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
from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.clustering.clusterers import NOISE
from histocluster.features.cell_pixels import cell_crops_by_id
from histocluster.features.type_net import network_cell_types
from histocluster.segmentation.measurements import SHAPE_COLUMNS, STAIN_COLUMNS

REPRESENTATIVE_COLUMNS = ["cluster_id", "rank", "cell_id", "slide_id", "tile_id", "confidence"]
GALLERY_COLUMNS = ["cluster_id", "kind", "rank", "cell_id", "slide_id", "tile_id", "confidence", "crop_um"]
#: The rows of a gallery, in order: what the cluster is, what it holds, where it frays.
GALLERY_KINDS = ("typical", "random", "borderline")
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


def network_type_shares(clusters: pd.DataFrame, deep_features) -> pd.DataFrame | None:
    """Per cluster (noise excluded): the type most of its cells got from the type network
    (``network_type``: each cell's type of highest log-probability,
    :func:`histocluster.features.type_net.network_cell_types`) and the share of its cells
    with a network type that got it (``network_share``); ties go to the type first by name.
    A suggestion for a person naming the cluster, not a name. None when ``deep_features``
    hold no type network's output."""
    cell_types = network_cell_types(deep_features)
    if cell_types is None:
        return None
    typed = clusters.loc[clusters["cluster_id"] != NOISE, ["cell_id", "cluster_id"]].merge(
        cell_types[["cell_id", "network_type"]].dropna(), on="cell_id", how="inner"
    )
    if typed.empty:
        return pd.DataFrame({"cluster_id": pd.Series(dtype=int), "network_type": [], "network_share": []})
    counts = typed.groupby(["cluster_id", "network_type"]).size().rename("n").reset_index()
    counts = counts.sort_values(["cluster_id", "n", "network_type"], ascending=[True, False, True])
    top = counts.groupby("cluster_id").head(1).set_index("cluster_id")
    share = top["n"] / typed.groupby("cluster_id").size()
    return pd.DataFrame(
        {
            "cluster_id": top.index.astype(int),
            "network_type": top["network_type"].to_numpy(),
            "network_share": share.to_numpy(),
        }
    )


def crop_key(cluster_id: int, rank: int, cell_id: str) -> str:
    """Partition key of a representative's crop: ``<cluster_id>/<rank>_<cell_id>``."""
    return f"{int(cluster_id)}/{int(rank):02d}_{cell_id}"


def _round_robin(group: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to ``n`` rows of ``group`` (already in preference order), taken one slide at a time
    in turn, so every slide the cluster spans is shown before any slide shows a second."""
    if n <= 0 or group.empty:
        return group.iloc[:0]
    turn = group.groupby("slide_id", sort=False).cumcount()
    return (
        group.assign(_turn=turn.to_numpy()).sort_values("_turn", kind="stable").head(n).drop(columns="_turn")
    )


def pick_gallery_members(
    clusters: pd.DataFrame,
    representatives: pd.DataFrame,
    n_random: int,
    n_borderline: int,
    crop_um: float,
    seed: int = 0,
) -> pd.DataFrame:
    """The cells each cluster's gallery shows (:data:`GALLERY_COLUMNS`; ``crop_um`` is the
    side their crops will have, for the scale bar): its representatives (``typical``),
    ``n_random`` members drawn at random and the ``n_borderline`` least confident members —
    the last two taken from each slide in turn and never repeating a cell shown above them.
    Noise has no gallery."""
    rng = np.random.default_rng(seed)
    typical = representatives.assign(kind="typical")
    shown = set(typical["cell_id"])
    rows = [typical]
    members = clusters[(clusters["cluster_id"] != NOISE) & ~clusters["cell_id"].isin(shown)]
    for _, group in members.groupby("cluster_id", sort=True):
        shuffled = group.iloc[rng.permutation(len(group))]
        random_rows = _round_robin(shuffled, n_random)
        rest = group[~group["cell_id"].isin(set(random_rows["cell_id"]))]
        weakest = rest.sort_values(["confidence", "cell_id"], kind="stable")
        border_rows = _round_robin(weakest, n_borderline)
        for kind, picked in (("random", random_rows), ("borderline", border_rows)):
            rows.append(picked.assign(kind=kind, rank=np.arange(len(picked))))
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=GALLERY_COLUMNS)
    order = table["kind"].map({k: i for i, k in enumerate(GALLERY_KINDS)})
    table = table.assign(_order=order, crop_um=float(crop_um))
    return table.sort_values(["cluster_id", "_order", "rank"])[GALLERY_COLUMNS].reset_index(drop=True)


def gallery_key(cluster_id: int, kind: str, rank: int, cell_id: str) -> str:
    """Partition key of a gallery crop: ``<cluster_id>/<kind>_<rank>_<cell_id>``."""
    return f"{int(cluster_id)}/{kind}_{int(rank):02d}_{cell_id}"


def crop_gallery_members(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    cells: pd.DataFrame,
    members: pd.DataFrame,
    crop_um: float,
    size: int,
) -> tuple[dict[str, Callable[[], Image.Image]], dict[str, Callable[[], Image.Image]]]:
    """Every gallery member's crop (``crop_um`` square), each cell read once, at the finest
    resolution its slide holds (level 0; coarser only where that would exceed ``size`` px),
    saved at ``size`` px with a 2 px outline drawn at that size (an outline drawn on a
    64 px read and then enlarged would cover the nucleus). Returns the representatives'
    crops (the ``typical`` members, keyed by :func:`crop_key`: what the model is shown) and
    all members' crops (keyed by :func:`gallery_key`: what the galleries show), as
    functions that make each picture when it is saved: the cells are read here, in reading
    order, and only their pixels as read are held (2,000 crops: ~100 MB instead of ~400)."""
    wanted = cells[cells["cell_id"].isin(members["cell_id"])]
    crops = (
        cell_crops_by_id(
            slides,
            tiles,
            wanted,
            crop_um,
            size=size,
            finest=True,
            max_px=size,
            outline_width=2,
            smooth_enlarge=True,
            lazy=True,
        )
        if len(wanted)
        else {}
    )
    pictures = {cell_id: partial(_picture, make) for cell_id, make in crops.items()}
    shown = members[members["cell_id"].isin(pictures)]
    typical = shown[shown["kind"] == "typical"]
    representatives = {
        crop_key(r.cluster_id, r.rank, r.cell_id): pictures[r.cell_id] for r in typical.itertuples()
    }
    gallery = {
        gallery_key(r.cluster_id, r.kind, r.rank, r.cell_id): pictures[r.cell_id] for r in shown.itertuples()
    }
    return representatives, gallery


def _picture(make: Callable[[], np.ndarray]) -> Image.Image:
    return Image.fromarray(make())
