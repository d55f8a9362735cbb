"""Nodes of the ``apply`` pipeline: place every cell in the training run's clusters and map,
label it with the cell-type model, name the clusters after their cells' labels. Each calls
the :mod:`histocluster.labelling.cell_type_model` function named in its doc."""

from __future__ import annotations

import logging

import pandas as pd

from histocluster.clustering.clusterers import CLUSTER_COLUMNS
from histocluster.labelling.cell_type_model import (
    CellTypeModel,
    cluster_names_from_cells,
    place_on_reference,
    predict,
)
from histocluster.labelling.cluster_labels import (
    CELL_LABEL_COLUMNS,
    CLUSTER_LABEL_COLUMNS,
    FILE_NOT_USED,
    REVIEW,
    naming_order,
)
from histocluster.labelling.propagation import count_labels
from histocluster.labelling.settings import ApplyParams
from histocluster.run_lineage import require_same_cells

logger = logging.getLogger(__name__)


def place_cells(cells: pd.DataFrame, embeddings, model: CellTypeModel) -> pd.DataFrame:
    """This run's cells in the clusters and on the map of the run that trained ``model``
    (:func:`~histocluster.labelling.cell_type_model.place_on_reference`), in the
    clustering's table shape."""
    require_same_cells(
        cells["cell_id"], {"cell_embeddings": embeddings.cell_ids}, fix="kedro run --pipelines=apply"
    )
    placed = place_on_reference(model, embeddings)
    table = placed.merge(cells[["cell_id", "slide_id", "tile_id"]], on="cell_id", how="left")
    table["is_noise"] = table["cluster_id"] < 0
    logger.info(
        "Placed %d cells in %d clusters of the clustering the cell-type model was trained on (%s, %s)",
        len(table),
        table.loc[~table["is_noise"], "cluster_id"].nunique(),
        model.summary.get("clustering"),
        model.summary.get("trained", "at an unknown time"),
    )
    return table[CLUSTER_COLUMNS]


def label_cells_with_model(
    clusters: pd.DataFrame, embeddings, model: CellTypeModel, params: ApplyParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every cell's type from ``model`` (:func:`~histocluster.labelling.cell_type_model.predict`):
    label, probability as its confidence, ``review`` below ``review_below``; and the
    counts per label per slide."""
    predictions = predict(model, embeddings, params.review_below)
    table = clusters[["cell_id", "slide_id", "cluster_id"]].merge(predictions, on="cell_id", how="left")
    is_review = table["label"] == REVIEW
    cell_labels = table.assign(
        source="model",
        confidence=table["probability"],
        status=is_review.map({True: REVIEW, False: "labelled"}),
    )[CELL_LABEL_COLUMNS]
    counts = count_labels(cell_labels)
    logger.info(
        "Cell-type model labelled %d cells (%d below probability %.2f: review): %s",
        len(cell_labels),
        int(is_review.sum()),
        params.review_below,
        ", ".join(f"{r.label} {r.cells}" for r in counts[counts["slide_id"] == "all"].itertuples()),
    )
    return cell_labels, counts


def name_clusters_by_model(
    cell_labels: pd.DataFrame, model: CellTypeModel, params: ApplyParams
) -> pd.DataFrame:
    """Each cluster named after the model's type of most of its cells
    (:func:`~histocluster.labelling.cell_type_model.cluster_names_from_cells`), for the
    galleries and the report."""
    table = cluster_names_from_cells(cell_labels, model, params.cluster_agreement, CLUSTER_LABEL_COLUMNS)
    table = naming_order(table, cell_labels.groupby("cluster_id").size())
    return table.assign(
        clustering=model.summary.get("clustering"),
        labels_file=f"{FILE_NOT_USED}: labels from the cell-type model",
    )
