"""From cluster labels to a label for every cell, and the counts per label.

* :func:`propagate` — every cell takes its cluster's label; noise cells take the label
  of the nearest labelled cluster (``noise: nearest``) or stay ``unlabelled``; cells of
  clusters without a usable label are ``unlabelled`` or ``review``, never silently
  something else.
* :func:`count_labels` — cells per label, per slide and overall.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from histocluster.labelling.cluster_labels import CELL_LABEL_COLUMNS, UNLABELLED


def propagate(
    clusters: pd.DataFrame,
    cluster_labels: pd.DataFrame,
    noise: str = "nearest",
    nearest_labelled: np.ndarray | None = None,
) -> pd.DataFrame:
    """A label for every cell (:data:`CELL_LABEL_COLUMNS`).

    Args:
        clusters: the clustering's cell table (cell_id, slide_id, cluster_id, is_noise,
            confidence).
        cluster_labels: :func:`vote` (+ :func:`apply_human`) output.
        noise: ``nearest`` (noise cells take ``nearest_labelled``) or ``unlabelled``.
        nearest_labelled: for the noise cells, in their order in ``clusters``, the id of
            the nearest *labelled* cluster (or -1 when there is none).

    A cell's confidence is its cluster confidence times the cluster's agreement (human
    labels count as agreement 1); noise cells that borrowed a label get half of the
    borrowed cluster's agreement; unlabelled cells 0.
    """
    table = cluster_labels.set_index("cluster_id")
    out = clusters[["cell_id", "slide_id", "cluster_id"]].copy()
    labelled = table[table["status"] == "labelled"]
    cluster_id = clusters["cluster_id"].to_numpy()
    is_noise = clusters["is_noise"].to_numpy() if "is_noise" in clusters else cluster_id < 0
    source_cluster = np.where(is_noise, -1, cluster_id)
    if noise == "nearest" and nearest_labelled is not None and is_noise.any():
        source_cluster[is_noise] = nearest_labelled
    status = (
        pd.Series(source_cluster)
        .map(table["status"])
        .astype(object)
        .fillna(UNLABELLED)
        .to_numpy(dtype=object)
    )
    label = np.where(status == "labelled", pd.Series(source_cluster).map(labelled["label"]), status)
    source = (
        pd.Series(source_cluster).map(labelled["source"]).astype(object).fillna("none").to_numpy(dtype=object)
    )
    agreement = pd.Series(source_cluster).map(labelled["agreement"]).fillna(0.0).to_numpy(dtype=float)
    confidence = np.where(is_noise, 0.5 * agreement, clusters["confidence"].to_numpy() * agreement)
    out["label"] = label.astype(object)
    out["source"] = np.where(status == "labelled", source, "none")
    out["confidence"] = np.where(status == "labelled", confidence, 0.0)
    out["status"] = np.where(is_noise & (status == "labelled"), "noise_nearest", status)
    return out[CELL_LABEL_COLUMNS].reset_index(drop=True)


def count_labels(cell_labels: pd.DataFrame) -> pd.DataFrame:
    """Cells per label per slide, and over all slides (slide_id ``all``), with fractions."""
    if cell_labels.empty:
        return pd.DataFrame(columns=["slide_id", "label", "cells", "fraction"])
    per_slide = cell_labels.groupby(["slide_id", "label"]).size().rename("cells").reset_index()
    overall = cell_labels.groupby("label").size().rename("cells").reset_index().assign(slide_id="all")
    counts = pd.concat([per_slide, overall], ignore_index=True)
    counts["fraction"] = counts["cells"] / counts.groupby("slide_id")["cells"].transform("sum")
    return counts.sort_values(["slide_id", "cells"], ascending=[True, False])[
        ["slide_id", "label", "cells", "fraction"]
    ]


def nearest_labelled_clusters(
    clusters: pd.DataFrame, cluster_labels: pd.DataFrame, embeddings, reducer, clusterer
) -> np.ndarray | None:
    """For every noise cell of ``clusters`` (in their order), the id of the nearest
    *labelled* cluster's centre in the reduced space; None when there is no noise or no
    labelled cluster. ``reducer`` and ``clusterer`` are the fitted models the clustering
    stage saved."""
    from histocluster.clustering.clusterers import nearest_centre

    noise = clusters["is_noise"].to_numpy()
    labelled = cluster_labels.loc[cluster_labels["status"] == "labelled", "cluster_id"].to_numpy()
    if not noise.any() or not len(labelled):
        return None
    keep = np.isin(clusterer.cluster_ids, labelled)
    row_of = pd.Series(np.arange(len(embeddings)), index=embeddings.cell_ids)
    rows = row_of.loc[clusters.loc[noise, "cell_id"]].to_numpy()
    reduced = reducer.transform(np.asarray(embeddings.matrix[np.sort(rows)]))
    reduced = reduced[np.argsort(np.argsort(rows))]  # back to the noise cells' order
    return clusterer.cluster_ids[keep][nearest_centre(reduced, clusterer.centres[keep])]
