"""Does each slide's result look like tissue at the scale it was read at?

A slide read at the wrong µm/px still gives a cell table that looks normal: at half its
true scale the nuclei are 4–6 px wide, the segmenter finds a few, and 115 cells look like
a result. :func:`check_slides` holds every slide's cells up to what tissue holds —
cells per mm² of kept tissue and the median nucleus area in µm² — and says, in words and
with the file that fixes it, when a slide is outside the usual range or gave no cells
and why (no tissue found, every tile rejected, a scale too coarse for nuclei).

Pure functions over the slide, tile, tile-quality and cell tables.
"""

from __future__ import annotations

import math
from pathlib import PurePath

import pandas as pd

from histocluster.segmentation.settings import PlausibleRanges
from histocluster.wsi.scale import SCALE_TABLE_NAME, describe_source
from histocluster.wsi.tile_quality import most_common_failures

#: Columns of the slide-check table.
CHECK_COLUMNS = [
    "slide_id",
    "mpp",
    "mpp_source",
    "tiles",
    "kept_tiles",
    "tissue_mm2",
    "cells",
    "cells_per_mm2",
    "median_area_um2",
    "status",
    "verdict",
    "fix",
]


def _tissue_mm2(tiles: pd.DataFrame, mpp_x: float, mpp_y: float) -> float:
    """Tissue area the tiles own: each core's level-0 area × its tissue fraction."""
    if tiles.empty:
        return 0.0
    core = (tiles["core_x1"] - tiles["core_x0"]) * (tiles["core_y1"] - tiles["core_y0"])
    fraction = tiles["tissue_fraction"].fillna(1.0).clip(0, 1)
    return float((core * fraction).sum() * mpp_x * mpp_y / 1e6)


def _scale_fix(slide: pd.Series) -> str:
    path = PurePath(str(slide["path"]))
    name, where = path.name, (path.parent / SCALE_TABLE_NAME).as_posix()
    if slide["mpp_source"] == "table":
        return f"check the µm/px given for {name} in {where}"
    return f"give {name}'s true µm/px in {where} (a line `{name},<µm/px>`), then rerun `kedro run`"


def check_slide(
    slide: pd.Series,
    tiles: pd.DataFrame,
    quality: pd.DataFrame,
    cells: pd.DataFrame,
    ranges: PlausibleRanges,
) -> dict:
    """One row of :data:`CHECK_COLUMNS` for a slide that was read (``status`` ok).

    ``status`` is ``ok``, ``check`` (cells outside the usual range: the verdict says which
    and ``fix`` what to change) or ``no cells`` (the verdict says why).
    """
    mpp_x, mpp_y = float(slide["mpp_x"]), float(slide["mpp_y"])
    mpp = math.sqrt(mpp_x * mpp_y)
    kept_ids = set(quality.loc[quality["keep"].astype(bool), "tile_id"]) if len(quality) else set()
    kept = tiles[tiles["tile_id"].isin(kept_ids)] if len(tiles) else tiles
    tissue = _tissue_mm2(kept, mpp_x, mpp_y)
    n_cells = len(cells)
    density = n_cells / tissue if tissue > 0 else float("nan")
    area = float(cells["area_um2"].median()) if n_cells else float("nan")
    row = {
        "slide_id": slide["slide_id"],
        "mpp": mpp,
        "mpp_source": slide["mpp_source"],
        "tiles": len(tiles),
        "kept_tiles": len(kept),
        "tissue_mm2": tissue,
        "cells": n_cells,
        "cells_per_mm2": density,
        "median_area_um2": area,
        "status": "ok",
        "verdict": "",
        "fix": "",
    }
    guessed = slide["mpp_source"] in ("parameter", "objective power", "estimated")
    how = f"{mpp:.3g} µm/px {describe_source(slide['mpp_source'])}"
    if mpp > ranges.max_mpp:
        row.update(
            status="no cells" if not n_cells else "check",
            verdict=(
                f"at {how} a nucleus (~7 µm) is under {7 / mpp:.1f} px: this is a low-magnification "
                f"image (an overview or thumbnail), too coarse to find nuclei (needs ≤ {ranges.max_mpp:g} µm/px)"
            ),
            fix="use the full-resolution scan of this slide"
            + (f", or {_scale_fix(slide)}" if guessed else ""),
        )
        return row
    if tiles.empty:
        row.update(
            status="no cells",
            verdict=(
                f"no tissue found: no tile is at least tiling.min_tissue_fraction tissue (at {how}; "
                "the tissue mask drops pieces under tiling.tissue.min_object_um2)"
            ),
            fix=(_scale_fix(slide) + "; " if guessed else "")
            + "look at data/08_reporting/tiling_overview/ and adjust tiling.tissue",
        )
        return row
    if kept.empty:
        common = most_common_failures(quality["reason"])
        row.update(
            status="no cells",
            verdict=f"every one of its {len(tiles)} tiles was rejected by the quality checks (most often: {common})",
            fix="look at data/08_reporting/tile_contact_sheet/ and adjust filtering.thresholds",
        )
        return row
    if not n_cells:
        row.update(
            status="no cells",
            verdict=f"the segmenter found no nucleus in {len(kept)} kept tiles (at {how})",
            fix=_scale_fix(slide) if guessed else "look at the tiles and the segmentation settings",
        )
        return row
    problems = []
    low, high = ranges.cells_per_mm2
    if not (low <= density <= high):
        problems.append(f"{density:,.0f} cells per mm² of tissue (usual {low:,.0f}–{high:,.0f})")
    low, high = ranges.median_area_um2
    if not (low <= area <= high):
        problems.append(f"median nucleus area {area:.1f} µm² (usual {low:g}–{high:g})")
    if problems:
        hint = " — the scale is probably wrong" if guessed else ""
        row.update(
            status="check",
            verdict=f"at {how}: {'; '.join(problems)}{hint}",
            fix=_scale_fix(slide),
        )
    elif slide["mpp_source"] == "parameter":
        # Nothing said the scale and nothing confirmed it: at twice the true µm/px the
        # network can still find a usual-looking number of usual-sized "nuclei" (on the
        # TCGA sample at 0.5 instead of 1 µm/px: 378 per mm², median 15.5 µm²).
        row.update(
            status="check",
            verdict=(
                f"its µm/px is not known: {how} (the file holds none and no scale could be estimated "
                "from its nuclei); the cells look usual, but at a wrong scale they can"
            ),
            fix=_scale_fix(slide),
        )
    return row


def check_slides(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    quality: pd.DataFrame,
    cells: pd.DataFrame,
    ranges: PlausibleRanges,
) -> pd.DataFrame:
    """:func:`check_slide` for every slide that was read, as a table of :data:`CHECK_COLUMNS`."""
    rows = []
    for _, slide in slides[slides["status"] == "ok"].iterrows():
        sid = slide["slide_id"]
        rows.append(
            check_slide(
                slide,
                tiles[tiles["slide_id"] == sid] if len(tiles) else tiles,
                quality[quality["slide_id"] == sid] if len(quality) else quality,
                cells[cells["slide_id"] == sid] if len(cells) else cells,
                ranges,
            )
        )
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)
