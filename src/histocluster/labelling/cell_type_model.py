"""A cell-type model: the names given to clusters, learnt from the cells' embeddings, so that
they label cells of slides never clustered with them and pre-name the clusters of a new run.

* :func:`training_cells` — which cells teach the model and how much: the members of every
  named cluster, each weighted by its label confidence (cluster confidence × agreement), the
  representatives (the cells a person or the model actually looked at) at full weight.
* :func:`train` — a :class:`CellTypeModel`: the classifier, its vocabulary, the embedding it
  expects (column names and the clustering settings that made it), a training summary, and
  the reference (the fitted reducer, 2-D map and clusterer of the training run) that places
  new cells in the named clusters.
* :func:`predict` — label, probability and ``review`` (below a threshold) for new cells.
* :func:`prename_clusters` — a name for each cluster of a new clustering whose members the
  model mostly agrees on.

The classifier is chosen by measurement (``bench/bench_cell_type_model.py``, docs/benchmarks.md).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from histocluster.errors import UserInputError
from histocluster.labelling.cluster_labels import REVIEW, UNLABELLED

logger = logging.getLogger(__name__)

Classifier = Literal["logistic_regression", "gradient_boosting", "knn"]
#: Labels that are not cell types: never learnt, never predicted.
NOT_TYPES = frozenset({UNLABELLED, REVIEW})


class CellTypeModelError(UserInputError):
    """The cell-type model cannot be used on these cells (untrained, other embedding)."""


@dataclass
class CellTypeModel:
    """Everything needed to label new cells the way named clusters were labelled.

    Attributes:
        classifier: a fitted scikit-learn classifier (``predict_proba``); None when the
            training run had fewer than two names (``summary["why_untrained"]`` says so).
        vocabulary: the cell types, in the classifier's class order.
        feature_names: the embedding's columns, in order: new cells must have the same.
        feature_spec: the clustering settings that made the embedding (embedders, weights,
            morphology, ``standardise_within``), to say what differs when columns do.
        summary: what it learnt from: when it was trained, the clustering's key, slides,
            cells and clusters per type, sources, classifier, agreement with the cluster
            names on the training cells.
        reference: the training run's fitted ``reducer`` dict (``reduction``, ``map``) and
            ``clusterer``, and the training clusters' names (``cluster_names``), to place new
            cells on the same map and in the same clusters.
    """

    classifier: Any
    vocabulary: list[str]
    feature_names: list[str]
    feature_spec: dict
    summary: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return self.classifier is not None


def training_cells(
    cell_labels: pd.DataFrame, representatives: pd.DataFrame, representative_weight: float = 1.0
) -> pd.DataFrame:
    """The cells a model learns from: ``cell_id``, ``label``, ``weight``, ``source``.

    Every cell whose label is a cell type (not ``unlabelled``/``review``) and came from a
    named cluster itself (noise cells that borrowed a neighbour's name are left out),
    weighted by its label confidence; representatives of named clusters at
    ``representative_weight`` (they are what the names were given from)."""
    named = cell_labels[(cell_labels["status"] == "labelled") & ~cell_labels["label"].isin(NOT_TYPES)][
        ["cell_id", "cluster_id", "label", "confidence", "source"]
    ]
    weight = named["confidence"].to_numpy(dtype=float).copy()
    is_rep = named["cell_id"].isin(set(representatives["cell_id"])).to_numpy()
    weight[is_rep] = np.maximum(weight[is_rep], representative_weight)
    out = named.assign(weight=weight, representative=is_rep)
    return out[out["weight"] > 0][["cell_id", "cluster_id", "label", "weight", "source", "representative"]]


def make_classifier(kind: Classifier, random_state: int = 0):
    """An unfitted scikit-learn classifier of the ``kind`` chosen in the parameters."""
    if kind == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        # Balanced classes and C 0.1: measured best on CoNSeP transfer (macro-F1 0.591 vs
        # 0.569 for C 1 unbalanced; docs/benchmarks.md): rare types are not drowned.
        return LogisticRegression(max_iter=2000, C=0.1, class_weight="balanced")
    if kind == "gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=200, class_weight="balanced", random_state=random_state
        )
    if kind == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=15, weights="distance")
    raise ValueError(f"unknown classifier {kind!r}")


def _sample(examples: pd.DataFrame, max_cells: int, seed: int) -> pd.DataFrame:
    """At most ``max_cells`` examples: every representative, then the heaviest-weighted
    others drawn at random with probability ∝ weight (each type keeps its share)."""
    if len(examples) <= max_cells:
        return examples
    reps = examples[examples["representative"]]
    rest = examples[~examples["representative"]]
    take = max(max_cells - len(reps), 0)
    rng = np.random.default_rng(seed)
    p = rest["weight"].to_numpy(dtype=float)
    chosen = rng.choice(len(rest), size=min(take, len(rest)), replace=False, p=p / p.sum())
    return pd.concat([reps, rest.iloc[np.sort(chosen)]])


def train(
    embeddings,
    examples: pd.DataFrame,
    *,
    classifier: Classifier = "logistic_regression",
    max_cells: int = 200_000,
    feature_spec: dict | None = None,
    reference: dict | None = None,
    random_state: int = 0,
) -> CellTypeModel:
    """A :class:`CellTypeModel` fitted on ``examples`` (:func:`training_cells`) with their
    rows of ``embeddings`` (:class:`~histocluster.clustering.embedding.Embeddings`).

    With fewer than two cell types among the examples the model is returned untrained
    (``classifier`` None) with the reason in ``summary["why_untrained"]``: a run without
    names must still finish, and applying such a model is a clear error."""
    names = list(getattr(embeddings, "columns", None) or [])
    row_of = pd.Series(np.arange(len(embeddings.cell_ids)), index=embeddings.cell_ids)
    examples = examples[examples["cell_id"].isin(row_of.index)]
    types = sorted(examples["label"].unique())
    summary: dict = {
        "trained": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "classifier": classifier,
        "cells": int(len(examples)),
        "cells_per_type": {str(k): int(v) for k, v in examples["label"].value_counts().sort_index().items()},
        "clusters_per_type": {
            str(k): int(v) for k, v in examples.groupby("label")["cluster_id"].nunique().sort_index().items()
        },
        "sources": {str(k): int(v) for k, v in examples["source"].value_counts().items()},
        "dims": len(names),
    }
    base = {
        "feature_names": names,
        "feature_spec": dict(feature_spec or {}),
        "reference": dict(reference or {}),
    }
    if len(types) < 2:
        why = (
            "no cluster has a name yet"
            if not types
            else f"every named cluster is '{types[0]}': a model needs two cell types to tell apart"
        )
        logger.info("Cell-type model not trained: %s", why)
        return CellTypeModel(None, types, summary={**summary, "why_untrained": why}, **base)
    used = _sample(examples, max_cells, random_state)
    rows = row_of.loc[used["cell_id"]].to_numpy()
    order = np.argsort(rows)  # read the embedding matrix in order (it may be memory-mapped)
    x = np.asarray(embeddings.matrix[rows[order]], dtype=np.float32)
    y = used["label"].to_numpy()[order]
    w = used["weight"].to_numpy(dtype=float)[order]
    model = make_classifier(classifier, random_state)
    if classifier == "knn":  # no sample weights: weak members are left out instead
        keep = w >= 0.5 * w.max()
        model.fit(x[keep], y[keep])
    else:
        model.fit(x, y, sample_weight=w)
    agreement = float(np.average(model.predict(x) == y, weights=w))
    summary.update(trained_on=int(len(used)), agreement_with_names=round(agreement, 4))
    logger.info(
        "Cell-type model (%s): %d types from %d cells (%s); agrees with the cluster names on %.1f%% "
        "of them (weighted)",
        classifier,
        len(types),
        len(used),
        ", ".join(f"{k} {v}" for k, v in summary["cells_per_type"].items()),
        100 * agreement,
    )
    return CellTypeModel(model, [str(c) for c in model.classes_], summary=summary, **base)


def embedding_settings(clustering: Any) -> dict:
    """The clustering settings that shape an embedding (embedders and weights, morphology,
    ``standardise_within``), from the clustering parameters as a model or a mapping."""
    values = clustering.model_dump(mode="json") if hasattr(clustering, "model_dump") else dict(clustering)
    return {k: values[k] for k in ("embedders", "morphology", "standardise_within") if k in values}


def check_features(model: CellTypeModel, embeddings, where: str = "these cells") -> None:
    """Raises :class:`CellTypeModelError` unless ``model`` is trained and ``embeddings``
    has exactly the model's columns (same embedders and settings)."""
    if not model.trained:
        raise CellTypeModelError(
            f"The cell-type model (trained {model.summary.get('trained')}) was not trained: "
            f"{model.summary.get('why_untrained')}. Name clusters first (the report's cluster cards, "
            "or conf/local/cluster_labels.yml), then `kedro run --pipelines=relabel`."
        )
    names = list(getattr(embeddings, "columns", None) or [])
    if names != model.feature_names:
        missing = [n for n in model.feature_names if n not in names][:5]
        extra = [n for n in names if n not in model.feature_names][:5]
        raise CellTypeModelError(
            f"The cell-type model expects {len(model.feature_names)} embedding columns, {where} have "
            f"{len(names)} (missing e.g. {missing}, extra e.g. {extra}). It was trained with the "
            f"clustering settings {model.feature_spec}; use the same `clustering` parameters "
            "(embedders, morphology) as the run that trained it."
        )


def predict(model: CellTypeModel, embeddings, review_below: float, chunk: int = 100_000) -> pd.DataFrame:
    """For every cell of ``embeddings``: ``cell_id``, ``predicted`` (the most probable type),
    ``probability``, and ``label`` — the predicted type, or ``review`` when its probability
    is below ``review_below``."""
    check_features(model, embeddings)
    n = len(embeddings.cell_ids)
    best = np.empty(n, dtype=object)
    probability = np.zeros(n, dtype=np.float64)
    classes = np.asarray(model.vocabulary, dtype=object)
    for start in range(0, n, chunk):
        proba = model.classifier.predict_proba(
            np.asarray(embeddings.matrix[start : start + chunk], np.float32)
        )
        top = proba.argmax(axis=1)
        best[start : start + chunk] = classes[top]
        probability[start : start + chunk] = proba[np.arange(len(top)), top]
    label = np.where(probability >= review_below, best, REVIEW)
    return pd.DataFrame(
        {"cell_id": embeddings.cell_ids, "predicted": best, "probability": probability, "label": label}
    )


def majority_types(table: pd.DataFrame, min_agreement: float) -> pd.DataFrame:
    """Per cluster of ``table`` (``cluster_id``, ``label`` per cell): the most common cell
    type among its cells (``top``; ``review`` is not a type; ties by name; None when no cell
    has a type), the share of the cluster's cells that got it (``agreement``), the votes
    (label → cells, most first, ``review`` included), the cluster's cell count, and whether
    the cluster can be named after ``top`` (``sure``: a type shared by at least
    ``min_agreement`` of its cells)."""
    rows = []
    for cluster_id, group in table.groupby("cluster_id", sort=True):
        counts = group["label"].value_counts()
        votes = {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
        top = next((k for k in votes if k != REVIEW), None)
        share = votes[top] / len(group) if top else 0.0
        rows.append((int(cluster_id), top, float(share), votes, int(len(group))))
    majority = pd.DataFrame(rows, columns=["cluster_id", "top", "agreement", "votes", "cells"])
    return majority.assign(sure=majority["top"].notna() & (majority["agreement"] >= min_agreement))


def prename_clusters(clusters: pd.DataFrame, predictions: pd.DataFrame, min_agreement: float) -> pd.DataFrame:
    """For every cluster (noise excluded): the model's most common confident type among its
    members (``label``), the share of members that got it (``agreement``), and the votes
    (:func:`majority_types`); ``label`` is None where the share is below ``min_agreement``."""
    table = clusters.loc[~clusters["is_noise"].astype(bool), ["cell_id", "cluster_id"]].merge(
        predictions[["cell_id", "label"]], on="cell_id", how="inner"
    )
    majority = majority_types(table, min_agreement)
    label = majority["top"].where(majority["sure"], None).astype(object)
    return majority.assign(label=label)[["cluster_id", "label", "agreement", "votes"]]


def clustering_key(clusters: pd.DataFrame) -> str:
    """A short fingerprint of a clustering (which cell is in which cluster): a labels file
    or a model written for one clustering says so, and is not applied by cluster number to
    another one, whose cluster 7 may hold other cells."""
    import hashlib

    pairs = clusters[["cell_id", "cluster_id"]].sort_values("cell_id", kind="stable")
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(pairs, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:12]


def place_on_reference(model: CellTypeModel, embeddings, chunk: int = 100_000) -> pd.DataFrame:
    """New cells placed in the training run's clusters and on its 2-D map, as scanpy's
    ``ingest`` does: the saved reducer, then the saved clusterer's nearest-neighbour vote
    and the map's placement. ``cell_id``, ``cluster_id``, ``confidence``, ``map_x``,
    ``map_y``; no clustering is fitted."""
    check_features(model, embeddings)
    reducer, clusterer = model.reference.get("reducer"), model.reference.get("clusterer")
    if reducer is None or clusterer is None:
        raise CellTypeModelError("The cell-type model holds no reference clustering to place cells in")
    n = len(embeddings.cell_ids)
    cluster_id, confidence = np.empty(n, np.int64), np.empty(n, np.float64)
    coords = np.zeros((n, 2), np.float32)
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        reduced = reducer["reduction"].transform(np.asarray(embeddings.matrix[part], np.float32))
        cluster_id[part], confidence[part] = clusterer.predict(reduced)
        placed = np.asarray(reducer["map"].transform(reduced), np.float32)
        coords[part, : min(2, placed.shape[1])] = placed[:, :2]
    return pd.DataFrame(
        {
            "cell_id": embeddings.cell_ids,
            "cluster_id": cluster_id,
            "confidence": confidence,
            "map_x": coords[:, 0],
            "map_y": coords[:, 1],
        }
    )


def cluster_names_from_cells(
    cell_labels: pd.DataFrame, model: CellTypeModel, min_agreement: float, columns: list[str]
) -> pd.DataFrame:
    """The cluster-label table of cells the model labelled: each cluster named after the
    model's type of at least ``min_agreement`` of its cells (else ``review``;
    :func:`majority_types`), source ``model``, with the votes and the name the cluster had
    in the training run (``suggested``)."""
    names = model.reference.get("cluster_names", {})
    described = (
        f"cell-type model ({model.summary.get('classifier')}, trained {model.summary.get('trained')} "
        f"on clustering {model.summary.get('clustering')})"
    )
    majority = majority_types(cell_labels[cell_labels["cluster_id"] >= 0], min_agreement)
    sure = majority["sure"]
    table = pd.DataFrame(
        {
            "cluster_id": majority["cluster_id"],
            "label": majority["top"].where(sure, REVIEW),
            "status": np.where(sure, "labelled", REVIEW),
            "source": "model",
            "votes": [json.dumps(v) for v in majority["votes"]],
            "agreement": majority["agreement"],
            "n_answers": majority["cells"],
            "suggested": [names.get(int(c)) for c in majority["cluster_id"]],
            "model": described,
            "cost_usd": None,
        },
        columns=columns,
    )
    return table.astype({"cluster_id": "int64", "agreement": "float64", "cost_usd": "float64"})
