"""Nodes of the ``classification`` pipeline: ask the model about representative cells,
vote per cluster, let a person's labels override, and label every cell."""

from __future__ import annotations

import io
import logging
from dataclasses import asdict

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.clustering.clusterers import NOISE, nearest_centre
from histocluster.features.cell_pixels import cell_crops_by_id
from histocluster.features.morphology import Embeddings
from histocluster.labelling.credentials import openai_api_key
from histocluster.labelling.labels import apply_human, count_labels, propagate, read_cluster_labels, vote
from histocluster.labelling.vlm_client import Answer, AnswerCache, VLMClassifier
from histocluster.params import ClassificationParams

logger = logging.getLogger(__name__)

ANSWER_COLUMNS = [
    "cluster_id",
    "rank",
    "cell_id",
    "label",
    "status",
    "raw",
    "cached",
    "cost_usd",
    "error",
    "model",
]


def ask_model(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    cells: pd.DataFrame,
    representatives: pd.DataFrame,
    params: ClassificationParams,
) -> tuple[pd.DataFrame, dict[str, Image.Image]]:
    """The model's answer for the first ``representatives`` cells of each cluster
    (:mod:`histocluster.labelling.vlm_client`), and their crops (for people: ``<cluster_id>/<rank>_<cell_id>``).
    Without an API key, or with ``representatives: 0``, nothing is asked and every row
    says ``skipped``."""
    chosen = representatives[representatives["rank"] < params.representatives].sort_values(
        ["cluster_id", "rank"]
    )
    wanted = cells[cells["cell_id"].isin(chosen["cell_id"])]
    crops = cell_crops_by_id(slides, tiles, wanted, params.crop_um, params.image_size) if len(chosen) else {}
    chosen = chosen[chosen["cell_id"].isin(crops)]
    pngs = []
    for cell_id in chosen["cell_id"]:
        buffer = io.BytesIO()
        Image.fromarray(crops[cell_id]).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    key = openai_api_key()
    model = params.vlm.model
    if params.representatives == 0:
        logger.info("Classification: representatives is 0, the model is not asked")
        answers = [Answer(None, "skipped", error="representatives: 0")] * len(pngs)
    elif key is None:
        logger.warning(
            "Classification: no API key (credentials `openai: {api_key: ...}` in conf/local/credentials.yml "
            "or OPENAI_API_KEY): the model step is skipped; labels from %s still apply",
            params.labels_file,
        )
        answers = [Answer(None, "skipped", error="no API key")] * len(pngs)
    else:
        vocabulary = params.vocabulary
        classifier = VLMClassifier(
            params.vlm, key.reveal(), vocabulary.prompt, vocabulary.labels, AnswerCache(params.cache_dir)
        )
        answers = classifier.ask(pngs)
    table = pd.DataFrame(
        [asdict(a) for a in answers],
        columns=[
            "label",
            "status",
            "raw",
            "cached",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
            "error",
        ],
    )
    table = pd.concat([chosen[["cluster_id", "rank", "cell_id"]].reset_index(drop=True), table], axis=1)
    table["model"] = model
    figures = {
        f"{row.cluster_id}/{row.rank:02d}_{row.cell_id}": Image.fromarray(crops[row.cell_id])
        for row in chosen.itertuples()
    }
    return table[ANSWER_COLUMNS], figures


def label_clusters(
    answers: pd.DataFrame, summary: pd.DataFrame, params: ClassificationParams
) -> pd.DataFrame:
    """Majority vote per cluster (:func:`histocluster.labelling.labels.vote`), then a person's
    labels from ``labels_file`` override it."""
    cluster_ids = sorted(int(c) for c in summary["cluster_id"] if c != NOISE)
    labels = vote(answers, cluster_ids, params.agreement_threshold, params.vlm.model)
    human = read_cluster_labels(params.labels_file)
    if human:
        labels, unknown = apply_human(labels, human)
        logger.info(
            "Classification: %d cluster labels from %s", len(human) - len(unknown), params.labels_file
        )
        if unknown:
            logger.warning(
                "%s names cluster(s) %s, which this clustering does not have (written for an older run?)",
                params.labels_file,
                unknown,
            )
        outside = sorted({v for v in human.values()} - set(params.vocabulary.labels))
        if outside:
            logger.info("Labels outside the '%s' vocabulary, kept as written: %s", params.label_set, outside)
    counts = labels["status"].value_counts().to_dict()
    logger.info("Cluster labels: %s", ", ".join(f"{k} {v}" for k, v in counts.items()) or "no clusters")
    return labels


def label_cells(
    clusters: pd.DataFrame,
    cluster_labels: pd.DataFrame,
    embeddings: Embeddings,
    reducer: dict,
    clusterer,
    params: ClassificationParams,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A label (or an explicit ``unlabelled`` / ``review``) for every cell, and counts
    per label per slide (:func:`histocluster.labelling.labels.propagate`)."""
    nearest = None
    noise = clusters["is_noise"].to_numpy()
    labelled = cluster_labels.loc[cluster_labels["status"] == "labelled", "cluster_id"].to_numpy()
    if params.noise == "nearest" and noise.any() and len(labelled):
        keep = np.isin(clusterer.cluster_ids, labelled)
        row_of = pd.Series(np.arange(len(embeddings)), index=embeddings.cell_ids)
        rows = row_of.loc[clusters.loc[noise, "cell_id"]].to_numpy()
        reduced = reducer["reduction"].transform(np.asarray(embeddings.matrix[np.sort(rows)]))
        reduced = reduced[np.argsort(np.argsort(rows))]  # back to the noise cells' order
        nearest = clusterer.cluster_ids[keep][nearest_centre(reduced, clusterer.centres[keep])]
    cell_labels = propagate(clusters, cluster_labels, params.noise, nearest)
    counts = count_labels(cell_labels)
    overall = counts[counts["slide_id"] == "all"]
    logger.info(
        "Labelled %d cells: %s",
        len(cell_labels),
        ", ".join(f"{r.label} {r.cells}" for r in overall.itertuples()),
    )
    return cell_labels, counts
