"""The cluster-label table: one label per cluster, from the model's answers and a person.

* :func:`vote` — a cluster's label is the majority of its representatives' valid
  answers; *agreement* (share of valid answers that gave it) is its confidence; a cluster
  below the agreement threshold, or without valid answers, is marked ``review``.
* :func:`apply_human` — a person's labels
  (:func:`~histocluster.labelling.labels_file.read_cluster_labels`) override the model.
"""

from __future__ import annotations

import json
import logging

import pandas as pd

from histocluster.labelling.settings import ClassificationParams

logger = logging.getLogger(__name__)

UNLABELLED = "unlabelled"
#: Answer statuses of representatives the model was sent (``budget``/``skipped``: not sent).
ASKED = ("ok", "rejected", "error")
REVIEW = "review"
CLUSTER_LABEL_COLUMNS = [
    "cluster_id",
    "label",
    "status",
    "source",
    "votes",
    "agreement",
    "n_answers",
    "suggested",
    "model",
    "cost_usd",
]
CELL_LABEL_COLUMNS = ["cell_id", "slide_id", "cluster_id", "label", "source", "confidence", "status"]


def vote(answers: pd.DataFrame, cluster_ids: list[int], threshold: float, model: str) -> pd.DataFrame:
    """Cluster labels from representatives' answers.

    Args:
        answers: one row per representative with ``cluster_id``, ``label`` (None unless
            valid), ``status`` and ``cost_usd``.
        cluster_ids: every cluster to label (noise excluded).
        threshold: minimum agreement for a label to stand without review.
        model: the model's name, recorded with each label.
    """
    rows = []
    for cluster_id in cluster_ids:
        mine = answers[answers["cluster_id"] == cluster_id] if len(answers) else answers
        valid = mine[mine["status"] == "ok"]["label"] if len(mine) else pd.Series(dtype=object)
        counts = valid.value_counts()
        votes = {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
        asked = mine[mine["status"].isin(ASKED)] if len(mine) else mine
        # The model and its cost only where it was asked (no API key: neither).
        answered_by, cost = (model, float(asked["cost_usd"].sum())) if len(asked) else (None, None)
        if counts.empty:
            rows.append(
                (
                    cluster_id,
                    UNLABELLED,
                    UNLABELLED,
                    "none",
                    json.dumps(votes),
                    0.0,
                    0,
                    None,
                    answered_by,
                    cost,
                )
            )
            continue
        top = next(iter(votes))
        agreement = votes[top] / len(valid)
        status = "labelled" if agreement >= threshold else REVIEW
        label = top if status == "labelled" else REVIEW
        row = (
            cluster_id,
            label,
            status,
            "vlm",
            json.dumps(votes),
            agreement,
            len(valid),
            top,
            answered_by,
            cost,
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=CLUSTER_LABEL_COLUMNS).astype(
        {"cluster_id": "int64", "cost_usd": "float64", "model": "object"}
    )


def apply_human(cluster_labels: pd.DataFrame, human: dict[int, str]) -> tuple[pd.DataFrame, list[int]]:
    """Human labels override the model's; returns the table and the ids in ``human``
    that are not clusters of this clustering (stale file?)."""
    out = cluster_labels.copy()
    known = set(out["cluster_id"])
    unknown = sorted(set(human) - known)
    for cluster_id, label in human.items():
        if cluster_id in known:
            row = out["cluster_id"] == cluster_id
            out.loc[row, ["label", "status", "source"]] = [label, "labelled", "human"]
            out.loc[row, "agreement"] = 1.0
    return out, unknown


def name_clusters(
    answers: pd.DataFrame, cluster_ids: list[int], params: ClassificationParams
) -> pd.DataFrame:
    """The cluster-label table: :func:`vote` over the model's answers, then the person's
    labels from ``params.labels_file`` (:func:`apply_human`); stale cluster ids and names
    outside the vocabulary are said in the log."""
    from histocluster.labelling.labels_file import load_cluster_labels, match_vocabulary

    labels = vote(answers, cluster_ids, params.agreement_threshold, params.vlm.model)
    given = load_cluster_labels(params.labels_file)
    if given.labels:
        human, outside = match_vocabulary(given.labels, params.vocabulary.labels)
        labels, unknown = apply_human(labels, human)
        logger.info("Classification: %d cluster labels from %s", len(human) - len(unknown), given.path)
        if unknown:
            logger.warning(
                "%s names cluster(s) %s, which this clustering does not have (written for an older run?)",
                given.path,
                unknown,
            )
        for label, closest in outside.items():
            where = ", ".join(
                f"line {given.lines[c]}" for c, written in given.labels.items() if written == label
            )
            logger.warning(
                "%s (%s): '%s' is not in the '%s' vocabulary%s; kept as written, counted apart",
                given.path,
                where,
                label,
                params.label_set,
                f" (did you mean '{closest}'?)" if closest else "",
            )
    counts = labels["status"].value_counts().to_dict()
    logger.info("Cluster labels: %s", ", ".join(f"{k} {v}" for k, v in counts.items()) or "no clusters")
    return labels
