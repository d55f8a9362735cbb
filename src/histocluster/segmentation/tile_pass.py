"""The one pass over a slide's tiles: each tile is decoded once, and everything that
needs its pixels before clustering is computed from that one array.

For every tile of a slide, in batches that share a resolution:

1. read it (with a margin around it only when a network's crops need one);
2. measure its quality (:mod:`histocluster.wsi.tile_quality`) and decide keep/reject;
   keep a small preview for the contact sheets;
3. segment the kept tiles (one segmenter call per batch);
4. per kept tile: object moments once, stitching (the cells the tile owns), the cell-table
   measurements, and the per-cell pixel features — intensity, texture and ring
   (:mod:`histocluster.features.texture`) and, when asked, a network's features of a crop
   around each cell (ResNet-50, :mod:`histocluster.features.resnet`, or the type network,
   :mod:`histocluster.features.type_net`) — from the label map and pixels already in hand.

Nothing later reads the slide again for these cells: the clustering stage embeds from the
cell table and the stored features.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.errors import UserInputError
from histocluster.features.cell_pixels import TileCells
from histocluster.features.embeddings import Embeddings
from histocluster.features.resnet import FEATURES as RESNET_FEATURES
from histocluster.features.settings import CellFeatureSettings
from histocluster.features.texture import PIXEL_COLUMNS, pixel_features
from histocluster.features.type_net import CROP as TYPENET_CROP
from histocluster.features.type_net import FEATURES as TYPENET_WIDTH
from histocluster.features.type_net import WORK_MPP as TYPENET_MPP
from histocluster.segmentation.label_maps import CompressedLabels
from histocluster.segmentation.measurements import CELL_COLUMNS, empty_cells, measure_objects, object_moments
from histocluster.segmentation.segmenter import Segmenter
from histocluster.segmentation.slide_store import SlideStore
from histocluster.segmentation.stitching import stitch
from histocluster.wsi.settings import QualityThresholds, TissueSettings
from histocluster.wsi.slides import open_slide
from histocluster.wsi.tile_grid import read_tile, read_with_margin, sample_uniform, tile_mpp
from histocluster.wsi.tile_quality import METRICS, judge, most_common_failures, tile_metrics

logger = logging.getLogger(__name__)

QUALITY_COLUMNS = ["tile_id", "slide_id", *METRICS, "keep", "reason"]


@dataclass
class PassSettings:
    """What the pass computes besides the segmentation itself."""

    quality: QualityThresholds | None  # None: filtering disabled, every tile kept unjudged
    tissue: TissueSettings
    features: CellFeatureSettings
    tiles_per_batch: int = 8
    export_label_masks: bool = False
    preview_size: int = 160


@dataclass
class SlideResult:
    """Everything the pass made for one slide."""

    slide_id: str
    quality: pd.DataFrame
    cells: pd.DataFrame
    deep_ids: list[np.ndarray] = field(default_factory=list)
    deep_rows: list[np.ndarray] = field(default_factory=list)
    deep_columns: list[str] = field(default_factory=list)  # the network's names for its features
    previews: dict[str, bytes] = field(default_factory=dict)
    masks: dict[str, CompressedLabels] = field(default_factory=dict)
    unreadable_tiles: int = 0  # rejected with their read error as the reason
    failed_tiles: int = 0  # kept tiles whose segmentation failed


def _batches(records: list[dict], size: int) -> Iterator[list[dict]]:
    """Consecutive batches of tiles that share one resolution (one segmenter call each)."""
    batch: list[dict] = []
    for record in records:
        if batch and (len(batch) == size or record["target_mpp"] != batch[0]["target_mpp"]):
            yield batch
            batch = []
        batch.append(record)
    if batch:
        yield batch


def _inner(padded: np.ndarray, margin: int) -> np.ndarray:
    """The tile itself inside a tile read with ``margin`` pixels around it (a view)."""
    return padded[margin : padded.shape[0] - margin, margin : padded.shape[1] - margin]


def cell_columns(features: CellFeatureSettings) -> list[str]:
    """The cell table's columns: the contract's, and the texture columns when computed."""
    return CELL_COLUMNS + (PIXEL_COLUMNS if features.texture else [])


@dataclass
class NetworkFeatures:
    """A network's features of a tile's cells (called with a :class:`TileCells`), and the
    names of its feature columns (empty: they are numbered)."""

    features: Callable[[TileCells], np.ndarray]
    columns: list[str] = field(default_factory=list)

    def __call__(self, item: TileCells) -> np.ndarray:
        return self.features(item)


def deep_feature_function(features: CellFeatureSettings, threads: int = 0) -> NetworkFeatures | None:
    """A network's features of a tile's cells when ``features.deep`` asks for them
    (ResNet-50 or the type network; the network and its weights load here, before any tile
    is read; ``threads`` for the type network's onnxruntime, 0 = its default), else None."""
    if features.deep == "resnet50":
        from histocluster.features.resnet import ResNetEmbedder

        return NetworkFeatures(ResNetEmbedder(features.resnet50).tile_features)
    if features.deep == "typenet":
        from histocluster.features.type_net import TypeNetEmbedder

        embedder = TypeNetEmbedder(features.typenet, threads)
        return NetworkFeatures(embedder.tile_features, list(embedder.columns))
    return None


def deep_crop_um(features: CellFeatureSettings) -> float:
    """Side of the crop around each cell that ``features.deep`` reads, µm (0: none)."""
    if features.deep == "resnet50":
        return features.resnet50.crop_um
    if features.deep == "typenet":
        return TYPENET_CROP * TYPENET_MPP
    return 0.0


def crop_margin(tiles: pd.DataFrame, features: CellFeatureSettings) -> int:
    """Output pixels read around each tile so that a network's crop of any owned cell is
    whole (0 without network features: the pass then reads exactly the tile)."""
    if features.deep == "none" or tiles.empty:
        return 0
    finest = float((tiles["out_mpp_x"] * tiles["out_mpp_y"]).min() ** 0.5)
    return int(np.ceil(deep_crop_um(features) / finest / 2)) + 1


def preview_jpeg(rgb: np.ndarray, size: int) -> bytes:
    """A ``size`` × ``size`` JPEG of a tile, for the contact sheets."""
    image = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _quality_row(tile: dict, rgb: np.ndarray | None, settings: PassSettings, error: str = "") -> dict:
    row = {"tile_id": tile["tile_id"], "slide_id": tile["slide_id"]}
    if rgb is None:
        row.update(dict.fromkeys(METRICS, np.nan), keep=False, reason=f"read error: {error}")
    elif settings.quality is None:
        row.update(dict.fromkeys(METRICS, np.nan), keep=True, reason="filtering disabled")
    else:
        metrics = tile_metrics(rgb, settings.quality, settings.tissue)
        keep, reason = judge(metrics, settings.quality)
        row.update(metrics, keep=keep, reason=reason)
    return row


def _tile_cells(
    tile: dict,
    labels: np.ndarray,
    score_map: np.ndarray | None,
    padded: np.ndarray,
    margin: int,
    slide_size: tuple[int, int],
    segmenter_name: str,
    settings: PassSettings,
    deep: Callable[[TileCells], np.ndarray] | None,
) -> tuple[pd.DataFrame, np.ndarray | None, np.ndarray]:
    """Cell rows (with pixel features) of one segmented tile, its network features (or
    None) and its owned label map."""
    rgb = _inner(padded, margin)
    moments = object_moments(labels)
    centres = np.column_stack([moments.mean_r, moments.mean_c])
    owned = stitch(labels, tile, *slide_size, centres)
    frame = measure_objects(owned, rgb, tile, segmenter_name, score_map, moments)
    if frame.empty:
        return frame, None, owned
    features = settings.features
    if features.texture:
        pixels = pixel_features(owned, rgb, tile_mpp(tile), features.ring_um).set_index("label")
        frame = frame.join(pixels[PIXEL_COLUMNS], on="label")
    matrix = None
    if deep is not None:
        # Cell k of the frame is drawn with value k + 1 in the padded frame.
        lookup = np.zeros(int(owned.max()) + 1, dtype=np.int32)
        lookup[frame["label"].to_numpy()] = np.arange(1, len(frame) + 1)
        relabelled = np.pad(lookup[owned], margin) if margin else lookup[owned]
        centres_px = np.column_stack(
            [
                moments.mean_c[frame["label"].to_numpy()] + 0.5 + margin,
                moments.mean_r[frame["label"].to_numpy()] + 0.5 + margin,
            ]
        )
        item = TileCells(tile, padded, relabelled, np.arange(len(frame)), centres_px)
        matrix = deep(item)
    return frame, matrix, owned


def process_slide(
    slide: dict,
    tiles: pd.DataFrame,
    segmenter: Segmenter,
    settings: PassSettings,
    deep: Callable[[TileCells], np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SlideResult:
    """The pass over one slide's tiles (see the module doc).

    Args:
        slide: the slide's row of the slide table (``path``, ``width``, ``height``).
        tiles: its tiles (tile table rows).
        segmenter: a loaded segmenter.
        settings: quality thresholds, features, batching.
        deep: network features of a :class:`TileCells` (one row per cell), or None.
        progress: called with (tiles done, cells found) after every batch.

    A tile that cannot be read is rejected with its error as the reason; a batch whose
    segmentation fails loses its tiles (logged, counted in ``failed_tiles``), not the slide.
    """
    slide_id = str(slide["slide_id"])
    slide_size = (int(slide["width"]), int(slide["height"]))
    margin = crop_margin(tiles, settings.features)
    result = SlideResult(slide_id, pd.DataFrame(columns=QUALITY_COLUMNS), empty_cells())
    result.deep_columns = list(getattr(deep, "columns", None) or [])
    quality_rows: list[dict] = []
    frames: list[pd.DataFrame] = []
    n_cells = 0
    with open_slide(slide["path"]) as reader:
        for batch in _batches(tiles.to_dict("records"), settings.tiles_per_batch):
            kept: list[tuple[dict, np.ndarray]] = []
            for tile in batch:
                try:
                    padded = read_with_margin(reader, tile, margin) if margin else read_tile(reader, tile)
                except Exception as exc:  # one unreadable tile must not cost the slide
                    logger.error("Tile %s: cannot be read (%s)", tile["tile_id"], exc)
                    quality_rows.append(_quality_row(tile, None, settings, f"{type(exc).__name__}: {exc}"))
                    result.unreadable_tiles += 1
                    continue
                rgb = _inner(padded, margin)
                row = _quality_row(tile, rgb, settings)
                quality_rows.append(row)
                result.previews[tile["tile_id"]] = preview_jpeg(rgb, settings.preview_size)
                if row["keep"]:
                    kept.append((tile, padded))
            if kept:
                try:
                    images = [_inner(padded, margin) for _, padded in kept]
                    segmented = segmenter.segment_scored(images, tile_mpp(kept[0][0]))
                except Exception as exc:
                    result.failed_tiles += len(kept)
                    logger.error("Tiles %s…: segmentation failed (%s)", kept[0][0]["tile_id"], exc)
                    segmented = []
                for (tile, padded), (labels, score_map) in zip(kept, segmented, strict=False):
                    frame, matrix, owned = _tile_cells(
                        tile, labels, score_map, padded, margin, slide_size, segmenter.name, settings, deep
                    )
                    if len(frame):
                        frames.append(frame.drop(columns="label"))
                        n_cells += len(frame)
                        if matrix is not None:
                            result.deep_ids.append(frame["cell_id"].to_numpy())
                            result.deep_rows.append(matrix)
                    if settings.export_label_masks:
                        result.masks[f"{slide_id}/{tile['tile_id']}"] = CompressedLabels(owned)
            if progress is not None:
                progress(len(batch), n_cells)
    result.quality = pd.DataFrame(quality_rows, columns=QUALITY_COLUMNS).astype({"keep": bool})
    if frames:
        result.cells = pd.concat(frames, ignore_index=True)
    result.cells = result.cells.reindex(columns=cell_columns(settings.features))
    return result


class SegmentationFailedError(UserInputError):
    """No slide could be segmented; the message lists each slide's error."""


@dataclass
class PassOutput:
    """The pass over every slide: the tables and pictures the pipeline saves."""

    quality: pd.DataFrame
    cells: pd.DataFrame
    deep: Embeddings
    masks: dict[str, CompressedLabels]
    previews: dict[str, bytes]  # "<slide_id>/<tile_id>" → JPEG, the contact sheets' tiles


def sheet_tiles(tiles: pd.DataFrame, quality: pd.DataFrame, per_group: int) -> list[str]:
    """Tile ids a slide's contact sheet shows: up to ``per_group`` kept and as many
    rejected tiles, spread over the slide."""
    merged = tiles[["tile_id", "x", "y"]].merge(quality[["tile_id", "keep"]], on="tile_id")
    chosen: list[str] = []
    for keep in (True, False):
        group = merged[merged["keep"] == keep]
        picked = sample_uniform(group[["x", "y"]].to_numpy(dtype=np.float64), per_group)
        chosen += list(group["tile_id"].iloc[picked])
    return chosen


def _failed_slide_quality(tiles: pd.DataFrame, error: str) -> pd.DataFrame:
    quality = tiles[["tile_id", "slide_id"]].copy()
    for metric in METRICS:
        quality[metric] = np.nan
    quality["keep"] = False
    quality["reason"] = f"slide read error: {error}"
    return quality[QUALITY_COLUMNS]


def slide_chunks(tiles: pd.DataFrame, tiles_per_batch: int, tiles_per_task: int | None) -> list[pd.DataFrame]:
    """A slide's tiles as consecutive chunks of whole batches (about ``tiles_per_task``
    tiles each; all in one without it), so every chunk batches its tiles exactly as the
    whole slide would: the results do not depend on how the slide was cut."""
    if not tiles_per_task or len(tiles) <= tiles_per_task:
        return [tiles]
    chunks, current, size = [], [], 0
    position = 0
    for batch in _batches(tiles.to_dict("records"), tiles_per_batch):
        current.append((position, position + len(batch)))
        size += len(batch)
        position += len(batch)
        if size >= tiles_per_task:
            chunks.append(tiles.iloc[current[0][0] : current[-1][1]])
            current, size = [], 0
    if current:
        chunks.append(tiles.iloc[current[0][0] : current[-1][1]])
    return chunks


def merge_results(slide_id: str, parts: list[SlideResult], features: CellFeatureSettings) -> SlideResult:
    """One slide's result from the results of its chunks, in order."""
    if len(parts) == 1:
        return parts[0]
    merged = SlideResult(
        slide_id,
        pd.concat([p.quality for p in parts], ignore_index=True).astype({"keep": bool}),
        pd.concat([p.cells for p in parts if len(p.cells)] or [parts[0].cells], ignore_index=True).reindex(
            columns=cell_columns(features)
        ),
    )
    for part in parts:
        merged.deep_ids += part.deep_ids
        merged.deep_rows += part.deep_rows
        merged.deep_columns = merged.deep_columns or part.deep_columns
        merged.previews.update(part.previews)
        merged.masks.update(part.masks)
        merged.unreadable_tiles += part.unreadable_tiles
        merged.failed_tiles += part.failed_tiles
    return merged


@functools.lru_cache(maxsize=2)
def _worker_tools(params_json: str):
    """The segmenter and network features of a worker process, loaded once per parameters."""
    from histocluster.segmentation.segmenter import make_segmenter
    from histocluster.segmentation.settings import SegmentationParams

    params = SegmentationParams.model_validate_json(params_json)
    return make_segmenter(params), deep_feature_function(params.cell_features, threads=1)


def segment_chunk(slide: dict, tiles: pd.DataFrame, params_json: str, settings: PassSettings) -> SlideResult:
    """A task: :func:`process_slide` over some of a slide's tiles, in a worker process
    (one thread: the workers are the parallelism)."""
    import sys

    import cv2

    cv2.setNumThreads(1)
    segmenter, deep = _worker_tools(params_json)
    # torch is here only when the tools use it (the nuclei network on torch, Cellpose, ResNet, the type network).
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    return process_slide(slide, tiles, segmenter, settings, deep)


def segment_slides(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    segmenter: Segmenter,
    settings: PassSettings,
    deep: Callable[[TileCells], np.ndarray] | None = None,
    sheet_tiles_per_group: int = 24,
    store: SlideStore | None = None,
    key_of: Callable[[dict, pd.DataFrame], str] | None = None,
    executor=None,
    task: Callable[[dict, pd.DataFrame], SlideResult] | None = None,
    tiles_per_task: int | None = None,
) -> PassOutput:
    """:func:`process_slide` over every readable slide, with a progress bar. One slide
    that fails is reported and the others go on; when every slide fails nothing is
    returned as if finished: :class:`SegmentationFailedError` lists each slide's error.

    With ``store`` (and ``key_of(slide, its tiles)`` giving a slide's key), a slide whose
    result is stored under its key is not segmented again, and each slide's result is
    stored as soon as it is done (:mod:`histocluster.segmentation.slide_store`).

    With ``executor`` (``submit(fn, *args)`` → future, e.g. a Dask client) and ``task``
    (:func:`segment_chunk` with its parameters bound), each slide is cut into chunks of
    about ``tiles_per_task`` tiles (:func:`slide_chunks`), every chunk of every slide is
    submitted at once, and the results are taken slide by slide, in order: the same
    tables as in one process."""
    from tqdm.auto import tqdm

    by_id = slides.set_index("slide_id")
    quality = [pd.DataFrame(columns=QUALITY_COLUMNS)]
    frames, deep_ids, deep_rows, deep_columns = [], [], [], []
    masks: dict[str, CompressedLabels] = {}
    previews: dict[str, bytes] = {}
    failed: list[str] = []
    found = 0
    with tqdm(total=len(tiles), desc=f"Tiles ({segmenter.name})", unit="tile") as bar:
        plan = []  # (slide_id, its tiles, slide row, key, stored result | futures | error)
        for slide_id, slide_tiles in tiles.groupby("slide_id", sort=False):
            slide = {"slide_id": slide_id, **by_id.loc[slide_id].to_dict()}
            try:
                key = key_of(slide, slide_tiles) if store is not None and key_of is not None else None
                stored = store.load(slide_id, key) if key is not None else None
                if stored is not None or executor is None or task is None:
                    work = stored
                else:
                    chunks = slide_chunks(slide_tiles, settings.tiles_per_batch, tiles_per_task)
                    work = [(executor.submit(task, slide, chunk), len(chunk)) for chunk in chunks]
            except Exception as exc:
                key, work = None, exc
            plan.append((slide_id, slide_tiles, slide, key, work))

        for slide_id, slide_tiles, slide, key, work in plan:

            def progress(done: int, cells: int, slide_id=slide_id, before=found) -> None:
                bar.update(done)
                bar.set_postfix(slide=slide_id, cells=before + cells)

            try:
                if isinstance(work, Exception):
                    raise work
                if isinstance(work, SlideResult):
                    result = work
                    logger.info(
                        "Slide %s: segmentation reused from %s (same file, tiles, parameters and code)",
                        slide_id,
                        store.path(slide_id, key),
                    )
                    progress(len(slide_tiles), len(result.cells))
                else:
                    if work is None:  # in this process
                        result = process_slide(slide, slide_tiles, segmenter, settings, deep, progress)
                    else:
                        parts = []
                        for future, size in work:
                            parts.append(future.result())
                            progress(size, sum(len(p.cells) for p in parts))
                        result = merge_results(slide_id, parts, settings.features)
                    if key is not None and result.failed_tiles == 0:
                        store.save(slide_id, key, result)
            except Exception as exc:  # one bad slide must not cost the others
                message = f"{type(exc).__name__}: {exc}"
                logger.error("Slide %s: cannot be processed (%s); skipped", slide_id, message)
                failed.append(f"  {slide_id}: {message}")
                quality.append(_failed_slide_quality(slide_tiles, message))
                continue
            quality.append(result.quality)
            frames.append(result.cells)
            deep_ids += result.deep_ids
            deep_rows += result.deep_rows
            deep_columns = deep_columns or result.deep_columns
            masks.update(result.masks)
            readable = slide_tiles[slide_tiles["tile_id"].isin(result.previews)]  # unreadable: no preview
            for tile_id in sheet_tiles(readable, result.quality, sheet_tiles_per_group):
                previews[f"{slide_id}/{tile_id}"] = result.previews[tile_id]
            found += len(result.cells)
            kept = int(result.quality["keep"].sum())
            _log_slide(slide_id, result, kept, len(slide_tiles), failed)
    n_slides = tiles["slide_id"].nunique()
    if n_slides and len(failed) == n_slides:
        # Writing an empty cell table would look like a finished run that found nothing.
        raise SegmentationFailedError(
            f"Segmentation failed on every slide ({n_slides}); nothing was written:\n" + "\n".join(failed)
        )
    cells = pd.concat([f for f in frames if len(f)] or [empty_cells()], ignore_index=True)
    width = {"resnet50": RESNET_FEATURES, "typenet": TYPENET_WIDTH}.get(settings.features.deep, 0)
    deep_matrix = np.concatenate(deep_rows) if deep_rows else np.zeros((0, width), np.float32)
    deep_cells = np.concatenate(deep_ids) if deep_ids else np.array([], dtype=object)
    return PassOutput(
        pd.concat([q for q in quality if len(q)] or quality[:1], ignore_index=True).astype({"keep": bool}),
        cells.reindex(columns=cell_columns(settings.features)),
        Embeddings(
            deep_cells,
            deep_matrix,
            deep_columns
            if len(deep_columns) == deep_matrix.shape[1]
            else [f"{settings.features.deep}:{k}" for k in range(deep_matrix.shape[1])],
        ),
        masks,
        previews,
    )


def _log_slide(slide_id: str, result: SlideResult, kept: int, n_tiles: int, failed: list[str]) -> None:
    if kept and result.failed_tiles >= kept:
        logger.error("Slide %s: all %d kept tiles failed; no cells", slide_id, kept)
        failed.append(f"  {slide_id}: all {kept} kept tiles failed (see the log)")
        return
    logger.info(
        "Slide %s: %d of %d tiles kept, %d cells (%d kept tiles failed, %d tiles unreadable)",
        slide_id,
        kept,
        n_tiles,
        len(result.cells),
        result.failed_tiles,
        result.unreadable_tiles,
    )
    if n_tiles and not kept:
        logger.warning(
            "Slide %s: every one of its %d tiles was rejected by the quality checks (most often: %s); "
            "it yields no cells (see filtering.thresholds)",
            slide_id,
            n_tiles,
            most_common_failures(result.quality["reason"]),
        )
