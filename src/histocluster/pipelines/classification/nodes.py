"""Nodes of the ``classification`` pipeline: ask the model about representative cells,
vote per cluster, let a person's labels override, and label every cell."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pandas as pd
from PIL import Image

from histocluster.labelling.cell_type_model import (
    CellTypeModel,
    CellTypeModelError,
    clustering_key,
    embedding_settings,
    predict,
    prename_clusters,
    train,
    training_cells,
)
from histocluster.labelling.cluster_labels import FILE_APPLIED, labels_file_state, name_clusters, naming_order
from histocluster.labelling.credentials import openai_api_key
from histocluster.labelling.labels_file import load_cluster_labels
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
    answers: pd.DataFrame,
    summary: pd.DataFrame,
    clusters: pd.DataFrame,
    embeddings,
    previous_model: CellTypeModel | None,
    params: ClassificationParams,
) -> pd.DataFrame:
    """Majority vote per cluster; clusters of a new clustering the cell-type model of an
    earlier one names (names survive re-clustering); then a person's labels from
    ``labels_file`` override both, unless the file was written for another clustering
    (:func:`histocluster.labelling.cluster_labels.name_clusters`); and the order in which
    a person should name the rest (:func:`~histocluster.labelling.cluster_labels.naming_order`)."""
    cluster_ids = sorted(int(c) for c in summary.loc[~summary["noise"].astype(bool), "cluster_id"])
    key = clustering_key(clusters)
    prenamed, stale_sha = None, None
    if (
        previous_model is not None
        and previous_model.trained
        and previous_model.summary.get("clustering") != key
    ):
        stale_sha = previous_model.summary.get("labels_file_sha256")
        try:
            predictions = predict(previous_model, embeddings, review_below=0.0)
        except CellTypeModelError as exc:
            logger.warning("The previous cell-type model names no cluster of this run: %s", exc)
        else:
            prenamed = prename_clusters(clusters, predictions, params.cell_type_model.prename_agreement)
    labels = name_clusters(answers, cluster_ids, params, key, prenamed, stale_sha)
    return naming_order(labels, summary.set_index("cluster_id")["size"])


def train_cell_type_model(
    cell_labels: pd.DataFrame,
    cluster_labels: pd.DataFrame,
    representatives: pd.DataFrame,
    embeddings,
    reducer: dict,
    clusterer,
    params: ClassificationParams,
    clustering_params,
) -> CellTypeModel:
    """The cell-type model of this run's names
    (:func:`histocluster.labelling.cell_type_model.train`): what ``apply`` uses on new
    slides and what pre-names the clusters of the next clustering. Untrained (and saying
    why) while fewer than two cell types are named. ``clustering_params`` (the clustering
    section, as its model or a mapping) is recorded with the model."""
    settings = params.cell_type_model
    examples = training_cells(cell_labels, representatives, settings.representative_weight)
    labelled = cluster_labels[cluster_labels["status"] == "labelled"]
    applied = (
        bool(len(cluster_labels)) and labels_file_state(cluster_labels["labels_file"].iloc[0]) == FILE_APPLIED
    )
    model = train(
        embeddings,
        examples,
        classifier=settings.classifier,
        max_cells=settings.max_cells,
        feature_spec=embedding_settings(clustering_params),
        reference={
            "reducer": reducer,
            "clusterer": clusterer,
            "cluster_names": dict(zip(labelled["cluster_id"].astype(int), labelled["label"], strict=True)),
        },
    )
    model.summary.update(
        clustering=str(cluster_labels["clustering"].iloc[0]) if len(cluster_labels) else None,
        labels_file_sha256=load_cluster_labels(params.labels_file).sha256 if applied else None,
        slides=sorted(str(s) for s in cell_labels["slide_id"].unique()),
        names_by_source={str(k): int(v) for k, v in labelled["source"].value_counts().items()},
    )
    return model


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
