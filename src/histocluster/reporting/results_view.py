"""``results/``: a stable view of the newest outputs a person opens.

Kedro keeps every version of a versioned table under a timestamped folder
(``data/07_model_output/cell_labels.parquet/<version>/cell_labels.parquet``) and the
pictures and exports under ``data/08_reporting/``. After each run, ``results/`` at the
project root is rebuilt as one relative link per output, pointing at its newest version:
a spreadsheet, R, scanpy or QuPath user opens ``results/cells_csv/<slide>.csv`` or
``results/cell_labels.parquet`` and never needs the catalog. The files stay where Kedro
keeps them (and where DVC tracks them); ``results/`` holds links only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: Link name in ``results/`` → the catalog dataset it shows (its newest version).
RESULTS = {
    "report.html": "report_html",
    "qupath": "qupath_geojson",
    "cells_csv": "cell_csv",
    "cells.h5ad": "cells_h5ad",
    "cells.zarr": "cells_zarr",
    "cluster_gallery": "cluster_gallery_figure",
    "segmentation_check": "segmentation_check_figure",
    "cell_overlay": "cell_overlay_figure",
    "cell_overview": "cell_overview_figure",
    "cluster_map.png": "cluster_map_plot",
    "cluster_sizes.png": "cluster_sizes_plot",
    "label_counts.png": "label_counts_plot",
    "label_counts.csv": "label_counts",
    "slide_checks.csv": "slide_checks",
    "viewer": "viewer_json",
    "cells.parquet": "cells",
    "clusters.parquet": "clusters",
    "cluster_summary.parquet": "cluster_summary",
    "cluster_labels.parquet": "cluster_labels",
    "cell_labels.parquet": "cell_labels",
    "cell_embeddings": "cell_embeddings",
    "cell_type_model.pkl": "cell_type_model",
}


def refresh_view(folder: Path, targets: dict[str, Path]) -> dict[str, Path]:
    """Make ``folder`` hold exactly one relative link per existing target (name → path),
    built beside it and swapped in, so it never holds a mix of two runs' links. Targets
    that do not exist are left out. Returns the links made."""
    folder = Path(folder)
    building = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    made = {}
    for name, target in sorted(targets.items()):
        target = Path(target)
        if target.exists():
            (building / name).symlink_to(
                os.path.relpath(target.resolve(), folder.parent.resolve() / folder.name)
            )
            made[name] = target
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        folder.rename(old)
    building.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return made
