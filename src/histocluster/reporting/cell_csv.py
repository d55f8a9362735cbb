"""The per-cell table for spreadsheets and R: one CSV per slide, one row per cell.

Columns: the cell's ids, its centre in level-0 pixels and in µm from the slide's top-left
corner (the slide's µm/px), its bounding box in level-0 pixels, its cluster, label and
their confidences, its place on the cell map, and every measurement of the cell table
(shape and stain, in µm and optical density). The outline is left out (it is in the
QuPath GeoJSON). One file per slide keeps each under a spreadsheet's row limit
(1,048,576 rows in Excel and LibreOffice) for all but the largest slides.
"""

from __future__ import annotations

import pandas as pd

from histocluster.reporting.annotated_cells import measurement_columns

#: Columns first in every file, in this order; the cell table's measurements follow.
LEADING = [
    "cell_id",
    "slide_id",
    "tile_id",
    "centroid_x_px",
    "centroid_y_px",
    "centroid_x_um",
    "centroid_y_um",
    "bbox_x0",
    "bbox_y0",
    "bbox_x1",
    "bbox_y1",
    "cluster_id",
    "is_noise",
    "cluster_confidence",
    "label",
    "label_source",
    "label_confidence",
    "map_x",
    "map_y",
]


def cell_csv_table(cells: pd.DataFrame, mpp_x: float, mpp_y: float) -> pd.DataFrame:
    """One slide's annotated cells (:func:`~histocluster.reporting.annotated_cells.annotated_cells`)
    as the CSV's rows: :data:`LEADING` columns, then the measurements."""
    # Each column is taken once, by name (no copy of the whole table with its outlines: at
    # 10⁵–10⁶ cells a slide's table is hundreds of MB).
    made = {
        "centroid_x_px": cells["centroid_x"],
        "centroid_y_px": cells["centroid_y"],
        "centroid_x_um": cells["centroid_x"] * float(mpp_x),
        "centroid_y_um": cells["centroid_y"] * float(mpp_y),
    }
    leading = [c for c in LEADING if c in made or c in cells.columns]
    out = pd.DataFrame({c: made[c] if c in made else cells[c] for c in leading + measurement_columns(cells)})
    return out.reset_index(drop=True)
