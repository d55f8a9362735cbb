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
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.reporting.annotated_cells import slide_cells, slide_ids


def element_name(slide_id: str) -> str:
    """A SpatialData element/coordinate-system name for a slide id."""
    name = re.sub(r"[^0-9A-Za-z_]", "_", str(slide_id))
    return name if name[:1].isalpha() else f"slide_{name}"


#: Outlines encoded per block when a shapes element's GeoParquet file is written.
OUTLINE_BLOCK = 20_000


class CellsSpatialData:
    """The run's cells as SpatialData, to be written (:meth:`write`) as a ``.zarr`` folder.

    ``adata``: the run's AnnData (obs index = cell ids); ``table``: the annotated cells with
    ``cell_id``, ``slide_id`` and ``polygon`` (WKB, level-0 px); ``slides``: the slide table;
    ``thumbnails``: each slide's thumbnail (a slide without one gets no image element).

    The outlines go to the file block by block (``block`` cells at a time, straight from their
    WKB) instead of as one GeoDataFrame: spatialdata's writer needs every outline as a shapely
    object (~0.8 kB a cell) and then again as WKB and as an Arrow table, ~1.6 GB at 10⁶ cells
    on top of the table (docs/benchmarks.md, *Whole slides*). The folder is the same as
    spatialdata writes: spatialdata writes it with each slide's first outline, then each
    shapes element's ``shapes.parquet`` (GeoParquet, WKB) is rewritten with all of them."""

    def __init__(
        self,
        adata,
        table: pd.DataFrame,
        slides: pd.DataFrame,
        thumbnails: dict[str, Image.Image],
        block: int = OUTLINE_BLOCK,
    ) -> None:
        self.adata = adata
        self.table = table
        self.slides = slides
        self.thumbnails = thumbnails
        self.block = block

    def _elements(self):
        """Per slide: its id, its shapes element's name and its rows of the table (in order)."""
        for slide_id in slide_ids(self.table):
            rows = slide_cells(self.table, slide_id)  # the table itself on a one-slide run: no copy
            yield slide_id, f"{element_name(slide_id)}_nuclei", rows

    def first_outlines(self):
        """A :class:`spatialdata.SpatialData` of everything but the outlines past each
        slide's first: the table (annotating every outline), the thumbnails, and each
        slide's shapes element with its first outline (its format, coordinate system and
        transformation are those of the full element)."""
        import anndata
        import geopandas
        import shapely
        from spatialdata import SpatialData
        from spatialdata.models import Image2DModel, ShapesModel, TableModel
        from spatialdata.transformations import Identity, Scale

        adata = self.adata
        by_slide = self.slides.set_index("slide_id")
        shapes, images = {}, {}
        region = np.empty(adata.n_obs, dtype=object)
        instance = np.zeros(adata.n_obs, dtype=np.int64)
        for slide_id, key, rows in self._elements():
            system = element_name(slide_id)
            first = geopandas.GeoDataFrame(
                geometry=shapely.from_wkb(rows["polygon"].to_numpy()[:1]), index=pd.RangeIndex(1)
            )
            shapes[key] = ShapesModel.parse(first, transformations={system: Identity()})
            where = adata.obs_names.get_indexer(rows["cell_id"].astype(str))
            region[where] = key
            instance[where] = np.arange(len(rows))
            thumbnail = self.thumbnails.get(slide_id)
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

    def write(self, path: str | Path) -> None:
        """Writes the ``.zarr`` folder at ``path`` (which must not exist)."""
        path = Path(path)
        with warnings.catch_warnings():
            # Said by zarr and ome-zarr inside spatialdata's writer on every save; nothing a
            # user of this project can act on.
            warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
            warnings.filterwarnings(
                "ignore", message="Call to deprecated class Scaler", category=DeprecationWarning
            )
            self.first_outlines().write(path)
        for _, key, rows in self._elements():
            write_outlines_geoparquet(
                path / "shapes" / key / "shapes.parquet", rows["polygon"].to_numpy(), self.block
            )


def write_outlines_geoparquet(path: Path, wkb: np.ndarray, block: int = OUTLINE_BLOCK) -> None:
    """Rewrites the GeoParquet file ``path`` (one WKB ``geometry`` column and a range index,
    as geopandas writes it) with the outlines ``wkb``, ``block`` at a time: its schema and
    metadata are kept, the row count, bounding box and geometry types made those of ``wkb``."""
    import json

    import geopandas
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    template = pq.read_schema(path)
    bounds = np.array([np.inf, np.inf, -np.inf, -np.inf])
    types: set[str] = set()
    for start in range(0, len(wkb), block):
        geometries = shapely.from_wkb(wkb[start : start + block])
        box = shapely.total_bounds(geometries)
        bounds = np.r_[np.minimum(bounds[:2], box[:2]), np.maximum(bounds[2:], box[2:])]
        types.update(geopandas.GeoSeries(geometries).geom_type.dropna().unique())
    geo = json.loads(template.metadata[b"geo"])
    column = geo["columns"][geo["primary_column"]]
    column["bbox"] = [float(v) for v in bounds]
    column["geometry_types"] = sorted(types)
    frame = json.loads(template.metadata[b"pandas"])
    (index,) = frame["index_columns"]
    index.update(start=0, stop=len(wkb), step=1)
    schema = template.with_metadata(
        {**template.metadata, b"geo": json.dumps(geo).encode(), b"pandas": json.dumps(frame).encode()}
    )
    partial = path.with_name(f".{path.name}.partial")
    with pq.ParquetWriter(partial, schema) as writer:
        for start in range(0, len(wkb), block):
            column_block = pa.array(wkb[start : start + block], type=pa.binary())
            writer.write_table(pa.Table.from_arrays([column_block], schema=schema))
    partial.replace(path)
