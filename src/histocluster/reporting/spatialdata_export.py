"""The run's cells as a SpatialData object (a ``.zarr`` folder), for the scverse spatial tools
(``spatialdata``, ``napari-spatialdata``, ``squidpy``).

Per slide, in a coordinate system named after the slide (level-0 pixels):

* ``<slide>_nuclei`` (shapes): every nucleus outline as a polygon, row ``k`` of the slide's
  cells in cell-table order;
* ``<slide>_thumbnail`` (image, ``c, y, x``): the slide's saved thumbnail, scaled onto the
  slide's level-0 pixels (the whole slide at full resolution would be gigabytes; the
  pipeline never decodes it whole).

The table ``cells`` is the run's AnnData (:mod:`histocluster.reporting.anndata_export`)
annotating the shapes (``region``: the slide's shapes element, ``instance_id``: the row).
Element names keep only letters, digits and ``_`` (a slide ``cmu-1`` gives ``cmu_1_nuclei``).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.reporting.annotated_cells import slide_cells, slide_ids


def element_name(slide_id: str) -> str:
    """A SpatialData element/coordinate-system name for a slide id."""
    name = re.sub(r"[^0-9A-Za-z_]", "_", str(slide_id))
    return name if name[:1].isalpha() else f"slide_{name}"


def cells_spatialdata(adata, table: pd.DataFrame, slides: pd.DataFrame, thumbnails: dict[str, Image.Image]):
    """:class:`spatialdata.SpatialData` of the annotated cells (``table``: with ``polygon``
    as WKB in level-0 px), their AnnData (``adata``, obs index = cell ids) and each slide's
    thumbnail."""
    import anndata
    import geopandas
    import shapely
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    by_slide = slides.set_index("slide_id")
    shapes, images = {}, {}
    region = np.empty(adata.n_obs, dtype=object)
    instance = np.zeros(adata.n_obs, dtype=np.int64)
    for slide_id in slide_ids(table):
        rows = slide_cells(table, slide_id)  # the table itself on a one-slide run: no copy
        system = element_name(slide_id)
        outlines = geopandas.GeoDataFrame(
            geometry=shapely.from_wkb(rows["polygon"].to_numpy()), index=pd.RangeIndex(len(rows))
        )
        key = f"{system}_nuclei"
        shapes[key] = ShapesModel.parse(outlines, transformations={system: Identity()})
        where = adata.obs_names.get_indexer(rows["cell_id"].astype(str))
        region[where] = key
        instance[where] = np.arange(len(rows))
        thumbnail = thumbnails.get(slide_id)
        if thumbnail is not None:
            rgb = np.asarray(thumbnail.convert("RGB")).transpose(2, 0, 1)
            scale = [
                by_slide.loc[slide_id, "height"] / rgb.shape[1],
                by_slide.loc[slide_id, "width"] / rgb.shape[2],
            ]
            images[f"{system}_thumbnail"] = Image2DModel.parse(
                rgb,
                dims=("c", "y", "x"),
                c_coords=["r", "g", "b"],
                chunks=(3, 1024, 1024),  # written block by block (one block: +130 MB at 2,450²)
                transformations={system: Scale(scale, axes=("y", "x"))},
            )
    # The table annotating the shapes: the same matrices (not a copy: at 10⁶ cells the
    # measurements and the embedding are ~0.5 GB), its own obs with region and row.
    annotated = anndata.AnnData(
        X=adata.X,
        obs=adata.obs.assign(region=pd.Categorical(region.astype(str)), instance_id=instance),
        var=adata.var,
        uns=dict(adata.uns),
        obsm=dict(adata.obsm),
        layers=dict(adata.layers),
    )
    cells = TableModel.parse(
        annotated, region=sorted(shapes), region_key="region", instance_key="instance_id"
    )
    return SpatialData(shapes=shapes, images=images, tables={"cells": cells})
