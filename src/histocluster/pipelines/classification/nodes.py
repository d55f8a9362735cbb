"""Nodes of the ``classification`` pipeline: ask the model about representative cells,
vote per cluster, let a person's labels override, and label every cell."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pandas as pd
from PIL import Image

from histocluster.labelling.cluster_labels import name_clusters
from histocluster.labelling.credentials import openai_api_key
from histocluster.labelling.model_answers import ask_about_representatives
from histocluster.labelling.propagation import count_labels, nearest_labelled_clusters, propagate
from histocluster.labelling.settings import ClassificationParams

logger = logging.getLogger(__name__)


def ask_model(
    representatives: pd.DataFrame,
    crops: dict[str, Callable[[], Image.Image]],
    params: ClassificationParams,
) -> pd.DataFrame:
    """The model's answer for the first ``representatives`` cells of each cluster, shown
    the crops the clustering stage saved
    (:func:`histocluster.labelling.model_answers.ask_about_representatives`)."""
    return ask_about_representatives(representatives, crops, params, openai_api_key())


def label_clusters(
    answers: pd.DataFrame, summary: pd.DataFrame, params: ClassificationParams
) -> pd.DataFrame:
    """Majority vote per cluster, then a person's labels from ``labels_file`` override it
    (:func:`histocluster.labelling.cluster_labels.name_clusters`)."""
    cluster_ids = sorted(int(c) for c in summary.loc[~summary["noise"].astype(bool), "cluster_id"])
    return name_clusters(answers, cluster_ids, params)


def label_cells(
    clusters: pd.DataFrame,
    cluster_labels: pd.DataFrame,
    embeddings,
    reducer: dict,
    clusterer,
    params: ClassificationParams,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A label (or an explicit ``unlabelled`` / ``review``) for every cell, and counts
    per label per slide (:func:`histocluster.labelling.propagation.propagate`)."""
    nearest = None
    if params.noise == "nearest":
        nearest = nearest_labelled_clusters(
            clusters, cluster_labels, embeddings, reducer["reduction"], clusterer
        )
    cell_labels = propagate(clusters, cluster_labels, params.noise, nearest)
    counts = count_labels(cell_labels)
    overall = counts[counts["slide_id"] == "all"]
    logger.info(
        "Labelled %d cells: %s",
        len(cell_labels),
        ", ".join(f"{r.label} {r.cells}" for r in overall.itertuples()),
    )
    return cell_labels, counts
