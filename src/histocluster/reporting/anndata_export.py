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

    table = table.reset_index(drop=True)
    measured = [c for c in measurement_columns(table) if pd.api.types.is_numeric_dtype(table[c])]
    labels = table["label"].astype(str)
    categories = sorted(labels.unique())
    obs = pd.DataFrame(
        {
            "slide_id": pd.Categorical(table["slide_id"].astype(str)),
            "tile_id": table["tile_id"].astype(str).to_numpy(),
            "cluster": pd.Categorical(table["cluster_id"].astype(int).astype(str)),
            "is_noise": table["is_noise"].astype(bool).to_numpy(),
            "cluster_confidence": table["cluster_confidence"].astype(float).to_numpy(),
            "label": pd.Categorical(labels, categories=categories),
            "label_source": table["label_source"].astype(str).to_numpy(),
            "label_confidence": table["label_confidence"].astype(float).to_numpy(),
        },
        index=pd.Index(table["cell_id"].astype(str), name="cell_id"),
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
        ids, matrix = embedding
        row = pd.Series(np.arange(len(ids)), index=pd.Index(np.asarray(ids, dtype=str)))
        where = row.reindex(obs.index).to_numpy()
        rows = np.full((len(obs), matrix.shape[1]), np.nan, np.float32)
        found = ~np.isnan(where)
        rows[found] = np.asarray(matrix)[where[found].astype(int)]
        obsm["X_embedding"] = rows
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
    names = table.loc[~table["is_noise"].astype(bool)].groupby("cluster_id")["label"].first()
    uns = {
        "slides": slide_info,
        "cluster_names": {str(int(c)): str(name) for c, name in names.items()},
        "label_colors": ["#{:02x}{:02x}{:02x}".format(*label_colours[name]) for name in categories],
        "histocluster": {"parameters": json.dumps(parameters or {}, default=str)},
    }
    return anndata.AnnData(
        X=table[measured].to_numpy(dtype=np.float32),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(measured, name="measurement")),
        obsm=obsm,
        uns=uns,
    )
