"""Pictures of a clustering: the 2-D cell map (static and interactive) and cluster sizes."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.clustering.clusterers import NOISE

if TYPE_CHECKING:  # matplotlib and plotly are imported where they are drawn with
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

NOISE_COLOUR = "#bdbdbd"


def pyplot():
    """matplotlib's pyplot on the Agg backend (files, no screen), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cluster_colours(cluster_ids: np.ndarray) -> dict[int, str]:
    """A stable colour per cluster id (tab20, then hsv beyond 20); noise grey."""
    from matplotlib.colors import to_hex

    plt = pyplot()
    ids = sorted(int(c) for c in np.unique(cluster_ids) if c != NOISE)
    cmap = plt.get_cmap("tab20")
    colours = {NOISE: NOISE_COLOUR}
    for k, c in enumerate(ids):
        rgba = cmap(k % 20) if len(ids) <= 20 else plt.get_cmap("hsv")(k / max(len(ids), 1))
        colours[c] = to_hex(rgba)
    return colours


def _sample(clusters: pd.DataFrame, max_points: int, seed: int = 0) -> pd.DataFrame:
    if len(clusters) <= max_points:
        return clusters
    return clusters.sample(max_points, random_state=seed)


def cluster_map_figure(clusters: pd.DataFrame, max_points: int = 200_000) -> plt.Figure:
    """Scatter of ``map_x``/``map_y`` coloured by cluster, each cluster's id at its centre."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(8, 8), dpi=120)
    shown = _sample(clusters, max_points)
    colours = cluster_colours(clusters["cluster_id"].to_numpy())
    size = float(np.clip(20_000 / max(len(shown), 1), 0.5, 20))
    ax.scatter(
        shown["map_x"],
        shown["map_y"],
        c=shown["cluster_id"].map(colours),
        s=size,
        linewidths=0,
        rasterized=True,
    )
    for cluster_id, group in clusters[clusters["cluster_id"] != NOISE].groupby("cluster_id"):
        ax.annotate(
            str(cluster_id),
            (group["map_x"].median(), group["map_y"].median()),
            ha="center",
            va="center",
            fontsize=8,
            weight="bold",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0},
        )
    n_clusters = clusters.loc[clusters["cluster_id"] != NOISE, "cluster_id"].nunique()
    noise = int((clusters["cluster_id"] == NOISE).sum())
    title = f"{len(clusters):,} cells, {n_clusters} clusters" + (f", {noise:,} noise" if noise else "")
    if len(shown) < len(clusters):
        title += f" ({len(shown):,} drawn)"
    ax.set_title(title)
    ax.set_xlabel("map x")
    ax.set_ylabel("map y")
    ax.set_aspect("equal", adjustable="datalim")
    figure.tight_layout()
    return figure


def cluster_map_plotly(clusters: pd.DataFrame, max_points: int = 20_000) -> go.Figure:
    """Interactive cell map (one trace per cluster; hover shows cell, slide, cluster,
    confidence); at most ``max_points`` cells so kedro-viz previews it quickly."""
    import plotly.graph_objects as go

    shown = _sample(clusters, max_points)
    colours = cluster_colours(clusters["cluster_id"].to_numpy())
    figure = go.Figure()
    for cluster_id, group in shown.groupby("cluster_id", sort=True):
        name = "noise" if cluster_id == NOISE else f"cluster {cluster_id}"
        figure.add_trace(
            go.Scattergl(
                x=group["map_x"],
                y=group["map_y"],
                mode="markers",
                name=name,
                marker={"size": 4, "color": colours[int(cluster_id)]},
                customdata=np.column_stack(
                    [group["cell_id"], group["slide_id"], group["confidence"].round(3)]
                ),
                hovertemplate="%{customdata[0]}<br>slide %{customdata[1]}<br>"
                + name
                + "<br>confidence %{customdata[2]}<extra></extra>",
            )
        )
    title = f"Cell map: {len(clusters):,} cells" + (
        f" ({len(shown):,} drawn)" if len(shown) < len(clusters) else ""
    )
    figure.update_layout(title=title, xaxis_title="map x", yaxis_title="map y", template="plotly_white")
    return figure


def cluster_sizes_figure(summary: pd.DataFrame) -> plt.Figure:
    """Bar chart of cells per cluster (noise grey, last)."""
    plt = pyplot()
    ordered = pd.concat([summary[~summary["noise"]], summary[summary["noise"]]]) if len(summary) else summary
    colours = cluster_colours(ordered["cluster_id"].to_numpy()) if len(ordered) else {}
    width = float(np.clip(0.25 * len(ordered), 6, 24))
    figure, ax = plt.subplots(figsize=(width, 4), dpi=120)
    labels = ["noise" if c == NOISE else str(c) for c in ordered["cluster_id"]]
    ax.bar(labels, ordered["size"], color=[colours[int(c)] for c in ordered["cluster_id"]])
    ax.set_xlabel("cluster")
    ax.set_ylabel("cells")
    ax.set_title(f"Cells per cluster ({int(ordered['size'].sum()) if len(ordered) else 0:,} cells)")
    ax.tick_params(axis="x", labelrotation=90 if len(ordered) > 30 else 0, labelsize=7)
    figure.tight_layout()
    return figure


def figure_image(figure: plt.Figure, dpi: int = 120) -> Image.Image:
    """A matplotlib figure as a PIL image (the figure is closed), so it is saved as a PNG
    that later stages load instead of drawing it again."""
    plt = pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    buffer.seek(0)
    image = Image.open(buffer)
    image.load()
    return image
