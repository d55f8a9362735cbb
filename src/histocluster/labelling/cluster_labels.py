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

import numpy as np
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

#: What became of the labels file, as the cluster-label table's ``labels_file`` column says
#: it: one of these words, then ``": "`` and the detail (the file, or why not).
FILE_APPLIED, FILE_NOT_APPLIED, FILE_NOT_USED, FILE_NONE = "applied", "not applied", "not used", "none"


def labels_file_state(entry: object) -> str:
    """The state word (:data:`FILE_APPLIED`, …) of a ``labels_file`` entry."""
    return str(entry).split(":", 1)[0]


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


def apply_model_names(cluster_labels: pd.DataFrame, prenamed: pd.DataFrame) -> pd.DataFrame:
    """Clusters the model has no answer for (``unlabelled``) or doubts (``review``) take the
    name a cell-type model gives most of their cells
    (:func:`~histocluster.labelling.cell_type_model.prename_clusters`), source ``model``."""
    out = cluster_labels.copy()
    named = prenamed[prenamed["label"].notna()].set_index("cluster_id")
    for cluster_id, row in named.iterrows():
        at = (out["cluster_id"] == cluster_id) & (out["status"] != "labelled")
        if at.any():
            out.loc[at, ["label", "status", "source", "suggested"]] = [
                row["label"],
                "labelled",
                "model",
                row["label"],
            ]
            out.loc[at, "agreement"] = float(row["agreement"])
            out.loc[at, "votes"] = json.dumps({str(k): int(v) for k, v in row["votes"].items()})
    return out


def name_clusters(
    answers: pd.DataFrame,
    cluster_ids: list[int],
    params: ClassificationParams,
    clustering: str | None = None,
    prenamed: pd.DataFrame | None = None,
    stale_file_sha256: str | None = None,
) -> pd.DataFrame:
    """The cluster-label table: :func:`vote` over the model's answers, the names a previous
    cell-type model gives (``prenamed``, :func:`apply_model_names`), then the person's labels
    from ``params.labels_file`` (:func:`apply_human`); stale cluster ids and names outside
    the vocabulary are said in the log.

    A labels file keyed to another clustering than ``clustering`` (its ``clustering:``
    line), or an unkeyed file whose bytes are those a model trained for another clustering
    read (``stale_file_sha256``), is not applied: its cluster numbers name other cells
    now. Columns ``clustering`` (the key) and ``labels_file`` (what became of the file)
    say so, for the report."""
    from histocluster.labelling.labels_file import load_cluster_labels, match_vocabulary

    labels = vote(answers, cluster_ids, params.agreement_threshold, params.vlm.model)
    if prenamed is not None and len(prenamed):
        labels = apply_model_names(labels, prenamed)
        logger.info(
            "Classification: %d clusters named by the previous cell-type model",
            int((labels["source"] == "model").sum()),
        )
    given = load_cluster_labels(params.labels_file)
    file_state = FILE_NONE
    stale_key = given.clustering is not None and clustering is not None and given.clustering != clustering
    stale_bytes = (
        given.clustering is None and stale_file_sha256 is not None and given.sha256 == stale_file_sha256
    )
    if given.labels and (stale_key or stale_bytes):
        written_for = f"clustering {given.clustering}" if stale_key else "an earlier clustering"
        file_state = f"{FILE_NOT_APPLIED}: written for {written_for}, this clustering is {clustering}"
        logger.warning(
            "%s names clusters of %s; this clustering (%s) numbers its clusters differently, so its "
            "%d names are not applied by number%s. Name this run's clusters in the report and save "
            "the file again.",
            given.path,
            written_for,
            clustering,
            len(given.labels),
            " (the cell-type model trained on them named clusters of this one)"
            if prenamed is not None
            else "",
        )
    elif given.labels:
        file_state = f"{FILE_APPLIED}: {given.path}"
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
    return labels.assign(clustering=clustering, labels_file=file_state)


def naming_order(cluster_labels: pd.DataFrame, sizes: pd.Series) -> pd.DataFrame:
    """Which cluster a person should name next: ``priority`` = cells × doubt, where doubt is
    1 for a cluster without a name, 1 − agreement for a name the model gave (a VLM vote, the
    cell-type model's share, a ``review`` cluster's best vote) and 0 for a person's name;
    ``naming_rank`` 1, 2, … from the most useful (ties: the larger cluster first; clusters a
    person named get no rank).

    Args:
        cluster_labels: the cluster-label table (``cluster_id``, ``status``, ``source``,
            ``agreement``).
        sizes: cells per cluster id.
    """
    out = cluster_labels.copy()
    size = out["cluster_id"].map(sizes).fillna(0).to_numpy(dtype=float)
    agreement = out["agreement"].fillna(0.0).clip(0, 1).to_numpy(dtype=float)
    doubt = np.where(out["status"] == UNLABELLED, 1.0, 1.0 - agreement)
    doubt = np.where(out["source"] == "human", 0.0, doubt)
    out["priority"] = size * doubt
    order = out.assign(_size=size).sort_values(
        ["priority", "_size", "cluster_id"], ascending=[False, False, True]
    )
    ranked = order[order["priority"] > 0]
    rank = pd.Series(np.arange(1, len(ranked) + 1), index=ranked.index)
    out["naming_rank"] = rank.reindex(out.index).astype("Int64")
    return out
