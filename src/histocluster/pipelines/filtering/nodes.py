"""Nodes of the ``filtering`` pipeline: contact sheets of kept and rejected tiles.

The quality of each tile is measured where the tile is decoded, in the segmentation
pass (:mod:`histocluster.segmentation.tile_pass`, with this pipeline's thresholds), so a
kept tile is read once; the pass also keeps a small preview of the tiles each contact
sheet shows. This pipeline lays those out; it reads no slide."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.lazy import materialise
from histocluster.wsi.pictures import contact_sheet
from histocluster.wsi.settings import FilteringParams

logger = logging.getLogger(__name__)


def _caption(row: dict) -> str:
    name = f"r{row['row']} c{row['col']}"
    if row["keep"]:
        return name
    first = str(row["reason"]).split(";")[0]
    return f"{name}: {first}"


def draw_contact_sheets(
    tiles: pd.DataFrame,
    tile_quality: pd.DataFrame,
    previews: dict[str, Callable[[], Image.Image]],
    params: FilteringParams,
) -> dict[str, Image.Image]:
    """One PNG per slide with the previewed kept and rejected tiles, spread over the
    slide, each captioned with its first failed check."""
    merged = tiles.merge(tile_quality[["tile_id", "keep", "reason"]], on="tile_id")
    sheets = {}
    for slide_id, slide_tiles in merged.groupby("slide_id", sort=False):
        if not any(f"{slide_id}/{t}" in previews for t in slide_tiles["tile_id"]):
            logger.error("Slide %s: no contact sheet (none of its tiles could be read)", slide_id)
            continue
        sections = []
        for label, keep in (("Kept", True), ("Rejected", False)):
            group = slide_tiles[slide_tiles["keep"] == keep]
            shown = [r for r in group.to_dict("records") if f"{slide_id}/{r['tile_id']}" in previews]
            items = [
                (
                    np.asarray(materialise(previews[f"{slide_id}/{r['tile_id']}"]).convert("RGB")),
                    _caption(r),
                    keep,
                )
                for r in shown
            ]
            sections.append((f"{label}: {len(shown)} of {len(group)} tiles", items))
        sheets[slide_id] = contact_sheet(sections, thumb_size=params.contact_sheet.thumb_size)
    return sheets
