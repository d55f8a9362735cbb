"""A person's cluster labels: the YAML or CSV file that names clusters and overrides the model."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import yaml

from histocluster.errors import UserInputError


class LabelsFileError(UserInputError):
    """The cluster-labels file cannot be read; the message names the file and the line."""


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
