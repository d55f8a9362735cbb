"""Nodes of the ``tiling`` pipeline: slide table, thumbnails, tissue masks, tile grid."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from histocluster.errors import UserInputError
from histocluster.wsi.pictures import tiling_overview
from histocluster.wsi.regions import (
    assign_regions,
    load_regions,
    rasterize,
    regions_from_records,
    regions_to_records,
)
from histocluster.wsi.scale import SCALE_TABLE_NAME, read_scale_table
from histocluster.wsi.settings import TilingParams
from histocluster.wsi.slides import (
    SLIDE_COLUMNS,
    SlideSource,
    best_level,
    describe_slide,
    failed_slide_row,
    open_slide,
    picture_thumbnail,
    require_unique_ids,
)
from histocluster.wsi.tile_grid import (
    TILE_COLUMNS,
    GridSpec,
    mask_fraction,
    plan_grid,
    read_tile,
    sample_uniform,
)
from histocluster.wsi.tissue import detect_tissue

logger = logging.getLogger(__name__)


class NoSlidesError(UserInputError):
    """The slide folder holds no slide."""


class NoReadableSlidesError(UserInputError):
    """Every slide in the folder failed to open; the message lists each error."""


def _thumbnail_downsample(row: dict, params: TilingParams) -> float:
    by_resolution = params.thumbnail_mpp / row["mpp_x"]
    by_size = max(row["width"], row["height"]) / params.thumbnail_max_side
    return max(1.0, by_resolution, by_size)


def describe_slides(
    sources: list[SlideSource], params: TilingParams
) -> tuple[pd.DataFrame, dict[str, Image.Image], dict[str, list[dict]]]:
    """Open every slide: its slide-table row, an RGB thumbnail and its regions (parsed
    once from the annotation files beside it, saved for the tile planning).

    A slide that cannot be opened or read (corrupt file, not a slide, broken region
    file) gets ``status='error'`` and its error in the table, and is skipped by every
    later step; the other slides go on.
    """
    if not sources:
        raise NoSlidesError(
            "No slides found in the raw_slides folder (conf/base/catalog.yml; data/01_raw/slides/ "
            "by default): put slide files there (.svs, .ndpi, .tiff, .mrxs, .scn, .png, .jpg, ...), "
            "or run `make sample` for the CC0 sample slide."
        )
    require_unique_ids(pd.DataFrame([vars(s) for s in sources]), "slide folder")
    folder = Path(sources[0].path).parent
    scale_table = read_scale_table(folder / SCALE_TABLE_NAME, [Path(s.path).name for s in sources])
    rows, thumbnails, region_records = [], {}, {}
    for source in tqdm(sources, desc="Reading slides", unit="slide"):
        try:
            with open_slide(source.path) as reader:
                row = describe_slide(
                    reader, source, params.default_mpp, scale_table.get(Path(source.path).name)
                )
                regions = load_regions(source.path) if params.use_regions else []
                row["regions"] = sorted({r.name for r in regions})
                region_records[source.slide_id] = regions_to_records(regions)
                thumbnail = reader.thumbnail(_thumbnail_downsample(row, params))
                thumbnails[source.slide_id] = Image.fromarray(thumbnail)
                if row["mpp_source"] == "parameter" and params.estimate_mpp:
                    _estimate_scale(row, reader, thumbnail, params)
        except Exception as exc:  # one bad slide must not cost the others
            logger.error("Skipping slide %s: %s", source.path, exc)
            row = failed_slide_row(source, f"{type(exc).__name__}: {exc}")
            row["regions"] = []
        else:
            if row["mpp_source"] == "estimated":
                logger.warning(
                    "Slide %s has no µm/px in its metadata: estimated %g µm/px from its nuclei (%s); "
                    "give the exact value in %s (a line `%s,<µm/px>`) if you know it",
                    source.path,
                    row["mpp_x"],
                    row["mpp_evidence"],
                    folder / SCALE_TABLE_NAME,
                    Path(source.path).name,
                )
            elif row["mpp_source"] == "parameter":
                logger.warning(
                    "Slide %s has no µm/px in its metadata%s; using tiling.default_mpp = %g "
                    "(give it in %s: a line `%s,<µm/px>`)",
                    source.path,
                    f" and its scale could not be estimated ({row['mpp_evidence']})"
                    if row["mpp_evidence"]
                    else "",
                    params.default_mpp,
                    folder / SCALE_TABLE_NAME,
                    Path(source.path).name,
                )
            elif row["mpp_source"] == "objective power":
                logger.warning(
                    "Slide %s has no µm/px in its metadata, only the objective power %g×: using "
                    "%.3g µm/px (10 / power); give the exact value in %s if you know it",
                    source.path,
                    row["objective_power"],
                    row["mpp_x"],
                    folder / SCALE_TABLE_NAME,
                )
            logger.info(
                "Slide %s: %d×%d px, %.3f µm/px (%s), %d level(s), reader %s",
                source.slide_id,
                row["width"],
                row["height"],
                row["mpp_x"],
                row["mpp_source"],
                row["levels"],
                row["reader"],
            )
        rows.append(row)
    slides = pd.DataFrame(rows, columns=[*SLIDE_COLUMNS, "regions"])
    failed = int((slides["status"] != "ok").sum())
    if failed == len(slides):
        errors = "\n".join(f"  {r.path}: {r.error}" for r in slides.itertuples())
        raise NoReadableSlidesError(f"None of the {len(slides)} slide(s) could be read:\n{errors}")
    if failed:
        logger.warning(
            "%d of %d slide(s) could not be read; see the slide table's error column", failed, len(slides)
        )
    return slides, thumbnails, region_records


def _estimate_scale(row: dict, reader, thumbnail: np.ndarray, params: TilingParams) -> None:
    """Estimate a slide's µm/px from its nuclei (:func:`estimate_slide_mpp`); update ``row``
    (µm/px, source ``estimated`` and the evidence; the evidence alone when no candidate
    won clearly)."""
    from histocluster.segmentation.scale_estimate import estimate_slide_mpp

    # The shipped network on the runtime this install has (torch or onnxruntime).
    estimate, regions = estimate_slide_mpp(reader, thumbnail, params.tissue)
    row["mpp_evidence"] = f"{regions} tissue regions: {estimate.evidence()}"
    if estimate.mpp is not None:
        row.update(mpp_x=estimate.mpp, mpp_y=estimate.mpp, mpp_source="estimated")


def _ok_slides(slides: pd.DataFrame) -> pd.DataFrame:
    return slides[slides["status"] == "ok"]


def _load(partitions: dict[str, Callable[[], Image.Image] | Image.Image], key: str) -> Image.Image:
    item = partitions[key]
    return item() if callable(item) else item


def _scale(row, image_shape: tuple[int, ...]) -> tuple[float, float]:
    """Level-0 pixels per thumbnail pixel, from the slide size and the image size."""
    return row["width"] / image_shape[1], row["height"] / image_shape[0]


def detect_tissue_masks(
    slides: pd.DataFrame, thumbnails: dict, params: TilingParams
) -> dict[str, Image.Image]:
    """Tissue mask (8-bit, 255 = tissue) of every readable slide, at thumbnail scale."""
    masks = {}
    for row in tqdm(_ok_slides(slides).to_dict("records"), desc="Tissue detection", unit="slide"):
        rgb = np.asarray(_load(thumbnails, row["slide_id"]).convert("RGB"))
        scale_x, _ = _scale(row, rgb.shape)
        mask = detect_tissue(rgb, row["mpp_x"] * scale_x, params.tissue)
        masks[row["slide_id"]] = Image.fromarray((mask * 255).astype(np.uint8))
        logger.info("Slide %s: tissue covers %.1f%% of the slide", row["slide_id"], 100 * mask.mean())
    return masks


def _slide_tiles(row: dict, mask: np.ndarray, records: list[dict], params: TilingParams) -> pd.DataFrame:
    scale = _scale(row, mask.shape)
    regions = regions_from_records(records) if params.use_regions else []
    if regions:
        mask = mask & rasterize(regions, mask.shape, scale)
    downsamples = list(row["level_downsamples"]) or [1.0]
    frames = []
    for target in params.target_mpp:
        grid = plan_grid(
            row["slide_id"],
            row["width"],
            row["height"],
            (row["mpp_x"], row["mpp_y"]),
            GridSpec(target_mpp=target, tile_size=params.tile_size, overlap=params.overlap),
        )
        boxes = grid[["x", "y", "w", "h"]].to_numpy()
        grid["tissue_fraction"] = mask_fraction(mask, scale, boxes)
        grid["read_level"] = np.int32(best_level(downsamples, grid["w"].iloc[0] / params.tile_size))
        on_tissue = grid[grid["tissue_fraction"] >= params.min_tissue_fraction]
        if regions:
            on_tissue = on_tissue.assign(
                region=assign_regions(regions, on_tissue[["x", "y", "w", "h"]].to_numpy())
            )
            on_tissue = on_tissue[on_tissue["region"].notna()]
        kept = on_tissue
        if params.max_tiles is not None and len(on_tissue) > params.max_tiles:
            centres = on_tissue[["x", "y"]].to_numpy() + on_tissue[["w", "h"]].to_numpy() / 2
            kept = on_tissue.iloc[sample_uniform(centres, params.max_tiles)]
        logger.info(
            "Slide %s at %g µm/px: %d grid tiles, %d on tissue, %d kept",
            row["slide_id"],
            target,
            len(grid),
            len(on_tissue),
            len(kept),
        )
        if kept.empty:
            logger.warning(
                "Slide %s at %g µm/px: no tile has tissue fraction ≥ %g%s; it yields no tiles",
                row["slide_id"],
                target,
                params.min_tissue_fraction,
                " inside its regions" if regions else "",
            )
        frames.append(kept)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TILE_COLUMNS)


def plan_tiles(
    slides: pd.DataFrame, tissue_masks: dict, slide_regions: dict[str, list[dict]], params: TilingParams
) -> pd.DataFrame:
    """The tile table: every kept tile of every readable slide at every resolution."""
    require_unique_ids(slides)
    frames = [pd.DataFrame(columns=TILE_COLUMNS)]
    for row in tqdm(_ok_slides(slides).to_dict("records"), desc="Planning tiles", unit="slide"):
        mask = np.asarray(_load(tissue_masks, row["slide_id"])) > 0
        frames.append(_slide_tiles(row, mask, slide_regions.get(row["slide_id"], []), params))
    tiles = pd.concat([f for f in frames if not f.empty] or frames, ignore_index=True)
    return tiles[TILE_COLUMNS].astype({"region": "object"})


def draw_tiling_overviews(
    slides: pd.DataFrame, thumbnails: dict, tissue_masks: dict, tiles: pd.DataFrame
) -> dict[str, Image.Image]:
    """One PNG per slide: thumbnail, tissue outline and the kept tiles' footprints."""
    overviews = {}
    for row in _ok_slides(slides).to_dict("records"):
        slide_id = row["slide_id"]
        rgb = picture_thumbnail(row["path"], np.asarray(_load(thumbnails, slide_id).convert("RGB")))
        mask = np.asarray(_load(tissue_masks, slide_id)) > 0
        slide_tiles = tiles[tiles["slide_id"] == slide_id]
        title = f"{slide_id}: {len(slide_tiles)} tiles, tissue {100 * mask.mean():.0f}%"
        overviews[slide_id] = tiling_overview(rgb, mask, slide_tiles, _scale(row, rgb.shape), title)
    return overviews


def _tile_writer(path: str, tile: dict) -> Callable[[], Image.Image]:
    def write() -> Image.Image:
        with open_slide(path) as reader:
            return Image.fromarray(read_tile(reader, tile))

    return write


def export_tile_images(slides: pd.DataFrame, tiles: pd.DataFrame, params: TilingParams) -> dict:
    """Tile PNGs as lazy partitions ``<slide_id>/<tile_id>`` when
    ``tiling.write_tile_images`` is on; nothing otherwise (later stages read tiles
    from the slides)."""
    if not params.write_tile_images:
        return {}
    paths = dict(zip(slides["slide_id"], slides["path"], strict=True))
    return {
        f"{tile['slide_id']}/{tile['tile_id']}": _tile_writer(paths[tile["slide_id"]], tile)
        for tile in tiles.to_dict("records")
    }
