"""Nodes of the ``filtering`` pipeline: per-tile quality metrics and contact sheets."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from histocluster.params import FilteringParams, TilingParams
from histocluster.wsi.pictures import contact_sheet
from histocluster.wsi.slides import open_slide
from histocluster.wsi.tile_grid import read_tile, sample_uniform
from histocluster.wsi.tile_quality import METRICS, judge, tile_metrics
from histocluster.wsi.tissue import TissueSettings

logger = logging.getLogger(__name__)

QUALITY_COLUMNS = ["tile_id", "slide_id", *METRICS, "keep", "reason"]


def _slide_paths(slides: pd.DataFrame) -> dict[str, str]:
    ok = slides[slides["status"] == "ok"]
    return dict(zip(ok["slide_id"], ok["path"], strict=True))


def _measure_slide(
    path: str, tiles: pd.DataFrame, params: FilteringParams, tissue: TissueSettings, progress: tqdm
) -> list[dict]:
    thresholds = params.thresholds
    rows = []
    with open_slide(path) as reader:
        for tile in tiles.to_dict("records"):
            row = {"tile_id": tile["tile_id"], "slide_id": tile["slide_id"]}
            try:
                metrics = tile_metrics(read_tile(reader, tile), thresholds, tissue)
            except Exception as exc:  # an unreadable tile is rejected, not fatal
                row.update(dict.fromkeys(METRICS, np.nan), keep=False, reason=f"read error: {exc}")
            else:
                keep, reason = judge(metrics, thresholds)
                row.update(metrics, keep=keep, reason=reason)
            rows.append(row)
            progress.update(1)
    return rows


def measure_tile_quality(
    slides: pd.DataFrame, tiles: pd.DataFrame, params: FilteringParams, tiling_params: TilingParams
) -> pd.DataFrame:
    """Quality metrics, keep flag and reason for every tile.

    The pixel-level tissue fraction uses the tissue thresholds of ``tiling.tissue``,
    so "tissue" means the same thing in both pipelines.

    With ``filtering.enabled: false`` every tile is kept without reading it. A tile
    that cannot be read is rejected with its error as the reason; a slide that cannot
    be opened any more has all its tiles rejected, and the other slides go on.
    """
    if not params.enabled:
        logger.info("Tile filtering is disabled: keeping all %d tiles", len(tiles))
        quality = tiles[["tile_id", "slide_id"]].copy()
        for metric in METRICS:
            quality[metric] = np.nan
        quality["keep"] = True
        quality["reason"] = "filtering disabled"
        return quality[QUALITY_COLUMNS]
    tissue = tiling_params.tissue
    paths = _slide_paths(slides)
    rows: list[dict] = []
    with tqdm(total=len(tiles), desc="Tile quality", unit="tile") as progress:
        for slide_id, slide_tiles in tiles.groupby("slide_id", sort=False):
            progress.set_postfix_str(slide_id)
            try:
                slide_rows = _measure_slide(paths[slide_id], slide_tiles, params, tissue, progress)
            except Exception as exc:
                logger.error("Slide %s: cannot read its tiles (%s); all rejected", slide_id, exc)
                slide_rows = [
                    {
                        "tile_id": t,
                        "slide_id": slide_id,
                        **dict.fromkeys(METRICS, np.nan),
                        "keep": False,
                        "reason": f"slide read error: {exc}",
                    }
                    for t in slide_tiles["tile_id"]
                ]
            kept = sum(r["keep"] for r in slide_rows)
            logger.info("Slide %s: %d of %d tiles kept", slide_id, kept, len(slide_rows))
            rows.extend(slide_rows)
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS).astype({"keep": bool})


def _caption(row: dict) -> str:
    name = f"r{row['row']} c{row['col']}"
    if row["keep"]:
        return name
    first = str(row["reason"]).split(";")[0]
    return f"{name}: {first}"


def draw_contact_sheets(
    slides: pd.DataFrame, tiles: pd.DataFrame, tile_quality: pd.DataFrame, params: FilteringParams
) -> dict[str, Image.Image]:
    """One PNG per slide with up to ``contact_sheet.max_tiles`` kept and rejected tiles,
    spread over the slide, each captioned with its first failed check."""
    paths = _slide_paths(slides)
    merged = tiles.merge(tile_quality[["tile_id", "keep", "reason"]], on="tile_id")
    sheets = {}
    for slide_id, slide_tiles in merged.groupby("slide_id", sort=False):
        try:
            sheets[slide_id] = _contact_sheet(paths[slide_id], slide_tiles, params)
        except Exception as exc:  # one bad slide must not cost the others' sheets
            logger.error("Slide %s: no contact sheet (%s)", slide_id, exc)
    return sheets


def _contact_sheet(path: str, slide_tiles: pd.DataFrame, params: FilteringParams) -> Image.Image:
    sections = []
    with open_slide(path) as reader:
        for label, keep in (("Kept", True), ("Rejected", False)):
            group = slide_tiles[slide_tiles["keep"] == keep]
            centres = group[["x", "y"]].to_numpy()
            shown = group.iloc[sample_uniform(centres, params.contact_sheet.max_tiles)]
            items = []
            for row in shown.to_dict("records"):
                try:
                    rgb = read_tile(reader, row)
                except Exception:  # already reported by the quality step
                    rgb = np.full((row["out_h"], row["out_w"], 3), 255, np.uint8)
                items.append((rgb, _caption(row), keep))
            sections.append((f"{label}: {len(shown)} of {len(group)} tiles", items))
    return contact_sheet(sections, thumb_size=params.contact_sheet.thumb_size)
