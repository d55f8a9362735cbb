"""A person's cluster labels: the YAML or CSV file that names clusters and overrides the model.

* YAML: ``7: lymphocyte`` or ``cluster 7: lymphocyte``, one per line; optionally
  ``clustering: <key>``, the clustering the names were given for (the report's download
  writes it): names keyed to another clustering are not applied by cluster number.
* CSV: columns ``cluster_id,label``, as a spreadsheet saves it too (UTF-8 with a byte-order
  mark, CRLF line ends, ``;`` or tab as the separator, header in any case).

The configured file (``conf/local/cluster_labels.yml``) may also be written with the other
YAML suffix (``.yaml``) or as ``.csv``: :func:`find_labels_file` says which one is read.
A cluster named twice (``7:`` and ``cluster 7:``) is an error naming both lines.
:func:`match_vocabulary` writes labels in the vocabulary's spelling (``Fibroblast`` →
``fibroblast``) and says which labels are not in it, with the closest word.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from histocluster.errors import UserInputError
from histocluster.wsi.spreadsheet import read_rows

logger = logging.getLogger(__name__)

#: Suffixes a labels file may have; the configured one is looked for first.
SUFFIXES = (".yml", ".yaml", ".csv")
_COMMENTS_ONLY = re.compile(r"\A(\s*(#.*)?\n?)*\Z")


class LabelsFileError(UserInputError):
    """The cluster-labels file cannot be read; the message names the file and the line."""


@dataclass
class ClusterLabels:
    """A person's labels: cluster id → label, and the line each was written on."""

    path: Path | None
    labels: dict[int, str] = field(default_factory=dict)
    lines: dict[int, int] = field(default_factory=dict)
    clustering: str | None = None  #: the clustering key the file was written for, if it says
    sha256: str | None = None  #: of the file's bytes: the same file met again after re-clustering


def _cluster_number(key: object, path: Path, where: str) -> int:
    match = re.fullmatch(r"\s*(?:cluster[\s_-]*)?(-?\d+)\s*", str(key), flags=re.IGNORECASE)
    if not match:
        raise LabelsFileError(
            f"{path}: {where}: '{key}' is not a cluster number (write e.g. `7: lymphocyte`)"
        )
    return int(match.group(1))


def _holds_labels(path: Path) -> bool:
    return path.is_file() and not _COMMENTS_ONLY.match(path.read_text(encoding="utf-8-sig"))


def find_labels_file(path: str | Path) -> Path | None:
    """The labels file to read for the configured ``path``: ``path`` itself, or the one
    file beside it with the same name and another suffix of :data:`SUFFIXES`
    (``cluster_labels.yaml`` for ``cluster_labels.yml``) when ``path`` is absent or holds
    only comments (``make setup`` creates it so). None when there is none.

    Raises:
        LabelsFileError: more than one of them holds labels (which one is meant?).
    """
    path = Path(path)
    variants = [path, *(path.with_suffix(s) for s in SUFFIXES if s != path.suffix.lower())]
    with_labels = [p for p in variants if _holds_labels(p)]
    if len(with_labels) > 1:
        raise LabelsFileError(
            f"{' and '.join(map(str, with_labels))} both name clusters: keep one "
            f"(classification.labels_file is {path})"
        )
    if with_labels:
        if with_labels[0] != path:
            logger.info(
                "Reading cluster labels from %s (classification.labels_file is %s)", with_labels[0], path
            )
        return with_labels[0]
    return path if path.is_file() else None


def _refuse_duplicates(seen: dict[int, int], cluster: int, line: int, path: Path) -> None:
    if cluster in seen:
        raise LabelsFileError(
            f"{path}: cluster {cluster} is named twice, on lines {seen[cluster]} and {line}: keep one"
        )
    seen[cluster] = line


def _read_yaml(path: Path) -> ClusterLabels:
    text = path.read_text(encoding="utf-8-sig")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise LabelsFileError(f"{path}: not valid YAML ({exc})") from None
    result = ClusterLabels(path)
    if root is None:
        return result
    if not isinstance(root, yaml.MappingNode):
        kind = {yaml.SequenceNode: "a list", yaml.ScalarNode: "a single value"}.get(
            type(root), "something else"
        )
        raise LabelsFileError(f"{path}: expected a mapping such as `7: lymphocyte`, got {kind}")
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        if str(key_node.value).strip().casefold() == "clustering":
            result.clustering = str(value_node.value).strip() or None
            continue
        if not isinstance(value_node, yaml.ScalarNode):
            raise LabelsFileError(f"{path}: line {line}: the label of '{key_node.value}' must be one name")
        cluster = _cluster_number(key_node.value, path, f"line {line}")
        _refuse_duplicates(result.lines, cluster, line, path)
        empty = value_node.tag.endswith(":null")  # `7:` or `7: ~`
        result.labels[cluster] = "" if empty else str(value_node.value).strip()
    return result


def _read_csv(path: Path) -> ClusterLabels:
    header, rows = read_rows(path)
    if not {"cluster_id", "label"} <= set(header):
        raise LabelsFileError(
            f"{path}: a CSV labels file needs the columns cluster_id,label (its header is {header})"
        )
    at_id, at_label = header.index("cluster_id"), header.index("label")
    result = ClusterLabels(path)
    for line, row in rows:
        if len(row) <= max(at_id, at_label):
            raise LabelsFileError(f"{path}: line {line}: expected {len(header)} columns, got {len(row)}")
        cluster = _cluster_number(row[at_id], path, f"line {line}")
        _refuse_duplicates(result.lines, cluster, line, path)
        result.labels[cluster] = row[at_label].strip()
    return result


def load_cluster_labels(path: str | Path) -> ClusterLabels:
    """A person's labels from the file :func:`find_labels_file` picks for ``path``; no file
    means no labels.

    Raises:
        LabelsFileError: the file cannot be parsed, a key is not a cluster number, a cluster
            is named twice or has an empty label (the message names the file and lines).
    """
    found = find_labels_file(path)
    if found is None:
        return ClusterLabels(None)
    result = _read_csv(found) if found.suffix.lower() == ".csv" else _read_yaml(found)
    result.sha256 = hashlib.sha256(found.read_bytes()).hexdigest()
    empty = sorted(k for k, v in result.labels.items() if not v)
    if empty:
        lines = ", ".join(str(result.lines[k]) for k in empty)
        raise LabelsFileError(f"{found}: cluster(s) {empty} have an empty label (line {lines})")
    return result


def read_cluster_labels(path: str | Path) -> dict[int, str]:
    """Cluster id → label from :func:`load_cluster_labels`."""
    return load_cluster_labels(path).labels


def match_vocabulary(
    labels: dict[int, str], vocabulary: list[str]
) -> tuple[dict[int, str], dict[str, str | None]]:
    """Labels in the vocabulary's spelling when they match it ignoring case and spaces
    (``Fibroblast``, ``plasma  cell``), and each label that matches nothing with the
    closest vocabulary word (None when nothing is close): those are kept as written."""
    canonical = {" ".join(word.split()).casefold(): word for word in vocabulary}
    matched, outside = {}, {}
    for cluster, label in labels.items():
        word = canonical.get(" ".join(label.split()).casefold())
        matched[cluster] = word or label
        if word is None:
            close = difflib.get_close_matches(label.casefold(), list(canonical), n=1, cutoff=0.6)
            outside[label] = canonical[close[0]] if close else None
    return matched, outside
