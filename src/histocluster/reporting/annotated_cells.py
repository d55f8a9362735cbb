"""The annotated cell table (cells with cluster, label and colour) and counts per label
and cluster."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from histocluster.clustering.clusterers import NOISE
from histocluster.labelling.cluster_labels import UNLABELLED


def annotated_cells(
    cells: pd.DataFrame, clusters: pd.DataFrame, cell_labels: pd.DataFrame | None
) -> pd.DataFrame:
    """The cell table with ``cluster_id``, ``cluster_confidence``, ``is_noise``, ``label``,
    ``label_source``, ``label_confidence`` (cells not clustered: cluster -1, noise; not
    labelled: ``unlabelled``)."""
    table = cells.merge(
        clusters[["cell_id", "cluster_id", "is_noise", "confidence", "map_x", "map_y"]].rename(
            columns={"confidence": "cluster_confidence"}
        ),
        on="cell_id",
        how="left",
    )
    table["cluster_id"] = table["cluster_id"].fillna(NOISE).astype("int64")
    table["is_noise"] = table["is_noise"].astype("boolean").fillna(True).astype(bool)
    table["cluster_confidence"] = table["cluster_confidence"].fillna(0.0)
    if cell_labels is not None and len(cell_labels):
        labels = cell_labels[["cell_id", "label", "source", "confidence"]].rename(
            columns={"source": "label_source", "confidence": "label_confidence"}
        )
        table = table.merge(labels, on="cell_id", how="left")
    else:
        table = table.assign(label=np.nan, label_source=np.nan, label_confidence=np.nan)
    table["label"] = table["label"].astype(object).fillna(UNLABELLED)
    table["label_source"] = table["label_source"].astype(object).fillna("none")
    table["label_confidence"] = table["label_confidence"].fillna(0.0)
    return table


#: Columns of the annotated cell table that describe a cell rather than measure it: ids,
#: outline, position, cluster and label, and the colour it is drawn in.
DESCRIPTIVE_COLUMNS = frozenset(
    {
        "cell_id", "slide_id", "tile_id", "polygon", "segmenter", "class_name", "colour",
        "centroid_x", "centroid_y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "cluster_id",
        "is_noise", "cluster_confidence", "label", "label_source", "label_confidence", "map_x", "map_y",
    }
)  # fmt: skip


def measurement_columns(table: pd.DataFrame) -> list[str]:
    """The annotated table's per-cell measurements (shape, stain, texture, the segmenter's
    score), in table order: every column not in :data:`DESCRIPTIVE_COLUMNS`."""
    return [c for c in table.columns if c not in DESCRIPTIVE_COLUMNS]


def slide_ids(table: pd.DataFrame) -> list[str]:
    """The slides the table holds cells of, sorted."""
    return sorted(table["slide_id"].unique()) if len(table) else []


def slide_cells(table: pd.DataFrame, slide_id: str) -> pd.DataFrame:
    """The rows of one slide, in table order: the table itself (not a copy) when it holds
    that slide only, as it does on a one-slide run, where a copy of a 10⁶-cell table with
    its outlines would cost ~1 GB."""
    same = table["slide_id"].to_numpy() == slide_id
    return table if same.all() else table[same]


#: Columns of :func:`slide_cell_stats`.
SLIDE_STATS_COLUMNS = ["slide_id", "cells", "artefacts", "mean_area_um2", "mean_hematoxylin"]


def not_cell_mask(labels: pd.Series, not_cells: Iterable[str]) -> np.ndarray:
    """Which objects are named as not being cells (``not_cells``, matched in any case)."""
    names = {str(name).casefold() for name in not_cells}
    matched = [label for label in pd.unique(labels) if str(label).casefold() in names]  # a few names
    return labels.isin(matched).to_numpy()


def slide_cell_stats(table: pd.DataFrame, not_cells: Iterable[str] = ()) -> pd.DataFrame:
    """Per slide: its cells, the objects named as not being cells (``not_cells``: keratin,
    debris; ``artefacts``), and the cells' mean nucleus area (µm²) and mean hematoxylin
    (OD) — what the report says of the cells, without holding the cell table."""
    if not len(table):
        return pd.DataFrame(columns=SLIDE_STATS_COLUMNS)
    artefact = not_cell_mask(table["label"], not_cells)
    cell = ~artefact
    frame = pd.DataFrame(
        {
            "slide_id": table["slide_id"].to_numpy(),
            "cells": cell.astype(int),
            "artefacts": artefact.astype(int),
            "area": np.where(cell, table["area_um2"].to_numpy(float), np.nan),
            "hematoxylin": np.where(cell, table["hematoxylin_mean"].to_numpy(float), np.nan),
        }
    )
    return (
        frame.groupby("slide_id")
        .agg(
            cells=("cells", "sum"),
            artefacts=("artefacts", "sum"),
            mean_area_um2=("area", "mean"),
            mean_hematoxylin=("hematoxylin", "mean"),
        )
        .reset_index()[SLIDE_STATS_COLUMNS]
    )


def counts(table: pd.DataFrame, not_cells: Iterable[str] = ()) -> dict:
    """Cells per label and per cluster, per slide and over all slides: ``cells`` counts
    every outlined object, ``not_cells`` those of them named as not being cells
    (``not_cells``, any case: :func:`not_cell_mask`)."""
    columns = table[["slide_id", "label", "cluster_id"]].assign(  # not the whole table, per slide
        not_cell=not_cell_mask(table["label"], not_cells)
    )

    def block(frame: pd.DataFrame) -> dict:
        return {
            "cells": int(len(frame)),
            "not_cells": int(frame["not_cell"].sum()),
            "labels": {str(k): int(v) for k, v in frame["label"].value_counts().items()},
            "clusters": {str(k): int(v) for k, v in frame["cluster_id"].value_counts().sort_index().items()},
        }

    return {"all": block(columns), "slides": {str(s): block(f) for s, f in columns.groupby("slide_id")}}


def coloured_cells(
    cells: pd.DataFrame, clusters: pd.DataFrame, cell_labels: pd.DataFrame | None, colour_by: str
) -> tuple[pd.DataFrame, str]:
    """:func:`annotated_cells` with ``class_name`` and ``colour`` (RGB) per cell, and what
    they are coloured by (:func:`~histocluster.reporting.colours.colour_mode`)."""
    from histocluster.reporting.colours import colour_mode, colour_table

    table = annotated_cells(cells, clusters, cell_labels)
    mode = colour_mode(table, colour_by)
    names, colours, _ = colour_table(table, mode)
    table["class_name"] = names.to_numpy()
    table["colour"] = colours.to_numpy()
    return table, mode
