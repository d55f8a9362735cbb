"""From answers about representative cells to a label for every cell.

* :func:`vote` — a cluster's label is the majority of its representatives' valid
  answers; *agreement* (share of valid answers that gave it) is its confidence; a cluster
  below the agreement threshold, or without valid answers, is marked ``review``.
* :func:`read_cluster_labels` / :func:`apply_human` — a person's labels (YAML or CSV)
  override the model.
* :func:`propagate` — every cell takes its cluster's label; noise cells take the label
  of the nearest labelled cluster (``noise: nearest``) or stay ``unlabelled``; cells of
  clusters without a usable label are ``unlabelled`` or ``review``, never silently
  something else.
* :func:`count_labels` — cells per label, per slide and overall.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from histocluster.errors import UserInputError

UNLABELLED = "unlabelled"
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


class LabelsFileError(UserInputError):
    """The cluster-labels file cannot be read; the message names the file and the line."""


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
        cost = float(mine["cost_usd"].sum()) if len(mine) else 0.0
        if counts.empty:
            rows.append(
                (cluster_id, UNLABELLED, UNLABELLED, "none", json.dumps(votes), 0.0, 0, None, model, cost)
            )
            continue
        top = next(iter(votes))
        agreement = votes[top] / len(valid)
        status = "labelled" if agreement >= threshold else REVIEW
        label = top if status == "labelled" else REVIEW
        row = (cluster_id, label, status, "vlm", json.dumps(votes), agreement, len(valid), top, model, cost)
        rows.append(row)
    return pd.DataFrame(rows, columns=CLUSTER_LABEL_COLUMNS).astype({"cluster_id": "int64"})


def _cluster_number(key: object, path: Path, where: str) -> int:
    match = re.fullmatch(r"\s*(?:cluster[\s_-]*)?(-?\d+)\s*", str(key), flags=re.IGNORECASE)
    if not match:
        raise LabelsFileError(
            f"{path}: {where}: '{key}' is not a cluster number (write e.g. `7: lymphocyte`)"
        )
    return int(match.group(1))


def read_cluster_labels(path: str | Path) -> dict[int, str]:
    """A person's cluster labels: YAML (``7: lymphocyte`` or ``cluster 7: lymphocyte``)
    or CSV with columns ``cluster_id,label``. A missing file means no labels."""
    path = Path(path)
    if not path.is_file():
        return {}
    labels: dict[int, str] = {}
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                if not reader.fieldnames or not {"cluster_id", "label"} <= set(reader.fieldnames):
                    raise LabelsFileError(f"{path}: a CSV labels file needs the columns cluster_id,label")
                for line, row in enumerate(reader, start=2):
                    labels[_cluster_number(row["cluster_id"], path, f"line {line}")] = (
                        row["label"] or ""
                    ).strip()
        else:
            content = yaml.safe_load(path.read_text()) or {}
            if not isinstance(content, dict):
                raise LabelsFileError(
                    f"{path}: expected a mapping such as `7: lymphocyte`, got {type(content).__name__}"
                )
            for key, value in content.items():
                labels[_cluster_number(key, path, f"key {key!r}")] = (
                    "" if value is None else str(value).strip()
                )
    except yaml.YAMLError as exc:
        raise LabelsFileError(f"{path}: not valid YAML ({exc})") from None
    empty = [k for k, v in labels.items() if not v]
    if empty:
        raise LabelsFileError(f"{path}: cluster(s) {empty} have an empty label")
    return labels


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
