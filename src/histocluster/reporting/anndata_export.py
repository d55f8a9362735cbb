"""The run's cells as one AnnData object (``.h5ad``), for scanpy, squidpy and friends.

* ``X``: the per-cell measurements (shape, stain and texture; float32), ``var_names`` their
  column names in the cell table.
* ``obs`` (index: ``cell_id``): ``slide_id``, ``tile_id``, ``cluster`` (categorical, ``-1``
  is noise), ``is_noise``, ``cluster_confidence``, ``label`` (categorical),
  ``label_source``, ``label_confidence``.
* ``obsm``: ``spatial`` (centre in level-0 pixels of the cell's slide, as squidpy expects),
  ``spatial_um`` (the same in µm), ``X_map`` (the 2-D cell map), ``X_embedding`` (the
  matrix the clusters were computed from, when given).
* ``uns``: ``slides`` (per slide: µm/px, where it came from, size, file), ``cluster_names``
  (cluster → label), ``label_colors`` (hex, in the order of ``obs["label"]``'s categories:
  scanpy's convention, the colours of every other picture of the run) and ``histocluster``
  (the run's clustering parameters as JSON).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from histocluster.reporting.annotated_cells import measurement_columns


def cells_anndata(
    table: pd.DataFrame,
    slides: pd.DataFrame,
    label_colours: dict[str, tuple[int, int, int]],
    embedding: tuple[np.ndarray, np.ndarray] | None = None,
    parameters: dict | None = None,
):
    """The annotated cells (:func:`~histocluster.reporting.annotated_cells.annotated_cells`)
    as an :class:`anndata.AnnData`. ``embedding`` is ``(cell_ids, matrix)`` in any order
    (cells it lacks get NaN rows)."""
    import anndata

    # Column by column, never a copy of the whole table (at 10⁶ cells with outlines, ~0.4 GB).
    measured = [c for c in measurement_columns(table) if pd.api.types.is_numeric_dtype(table[c])]
    labels = table["label"].astype(str).to_numpy()
    categories = sorted(set(labels))
    obs = pd.DataFrame(
        {
            "slide_id": pd.Categorical(table["slide_id"].astype(str).to_numpy()),
            "tile_id": table["tile_id"].astype(str).to_numpy(),
            "cluster": pd.Categorical(table["cluster_id"].astype(int).astype(str).to_numpy()),
            "is_noise": table["is_noise"].astype(bool).to_numpy(),
            "cluster_confidence": table["cluster_confidence"].astype(float).to_numpy(),
            "label": pd.Categorical(labels, categories=categories),
            "label_source": table["label_source"].astype(str).to_numpy(),
            "label_confidence": table["label_confidence"].astype(float).to_numpy(),
        },
        index=pd.Index(table["cell_id"].astype(str).to_numpy(), name="cell_id"),
    )
    by_slide = slides.set_index("slide_id")
    mpp = by_slide.loc[table["slide_id"], ["mpp_x", "mpp_y"]].to_numpy(dtype=float)
    spatial = table[["centroid_x", "centroid_y"]].to_numpy(dtype=float)
    obsm = {
        "spatial": spatial,
        "spatial_um": spatial * mpp,
        "X_map": table[["map_x", "map_y"]].to_numpy(float),
    }
    if embedding is not None:
        obsm["X_embedding"] = _rows_in_order(obs.index, *embedding)
    used = sorted(set(table["slide_id"].astype(str)))
    slide_info = {
        str(s): {
            "mpp_x": float(by_slide.loc[s, "mpp_x"]),
            "mpp_y": float(by_slide.loc[s, "mpp_y"]),
            "mpp_source": str(by_slide.loc[s, "mpp_source"]),
            "width": int(by_slide.loc[s, "width"]),
            "height": int(by_slide.loc[s, "height"]),
            "path": str(by_slide.loc[s, "path"]),
        }
        for s in used
    }
    clustered = ~obs["is_noise"].to_numpy()
    names = pd.Series(labels[clustered]).groupby(table["cluster_id"].to_numpy()[clustered]).first()
    uns = {
        "slides": slide_info,
        "cluster_names": {str(int(c)): str(name) for c, name in names.items()},
        "label_colors": ["#{:02x}{:02x}{:02x}".format(*label_colours[name]) for name in categories],
        "histocluster": {"parameters": json.dumps(parameters or {}, default=str)},
    }
    return anndata.AnnData(
        X=_float32_columns(table, measured),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(measured, name="measurement")),
        obsm=obsm,
        uns=uns,
    )


def _float32_columns(table: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """``table[columns]`` as a float32 matrix, filled a column at a time (``table[columns]``
    would first copy them all as float64)."""
    matrix = np.empty((len(table), len(columns)), np.float32)
    for j, column in enumerate(columns):
        matrix[:, j] = table[column].to_numpy()
    return matrix


def _rows_in_order(
    cell_ids: pd.Index, ids: np.ndarray, matrix: np.ndarray, block: int = 50_000
) -> np.ndarray:
    """``matrix``'s rows (one per id in ``ids``) in the order of ``cell_ids``, float32; NaN
    rows for cells it lacks. The matrix itself when it already is in that order; otherwise
    copied ``block`` rows at a time (a fancy index would make a second whole-size copy)."""
    ids = np.asarray(ids, dtype=str)
    if len(ids) == len(cell_ids) and np.array_equal(ids, cell_ids.to_numpy(dtype=str)):
        return np.asarray(matrix, dtype=np.float32)
    where = pd.Series(np.arange(len(ids)), index=pd.Index(ids)).reindex(cell_ids).to_numpy()
    rows = np.full((len(cell_ids), matrix.shape[1]), np.nan, np.float32)
    for start in range(0, len(rows), block):
        part = where[start : start + block]
        found = ~np.isnan(part)
        rows[start : start + block][found] = matrix[part[found].astype(int)]
    return rows
