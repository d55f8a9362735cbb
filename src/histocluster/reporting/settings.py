"""Parameter models of the annotation stage: no heavy imports."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from histocluster.strict_model import Strict


class OverlayParams(Strict):
    all_tiles: bool = Field(False, description="also one overlay per tile with cells (upstream's full set)")
    tiles_per_cluster: int = Field(2, ge=0, description="tiles holding a cluster's most confident cells")
    min_confidence: float = Field(
        0.1, ge=0, le=1, description="cells below are drawn thin, without text (filtered)"
    )
    filtered: bool = Field(True, description="outline and text in full only cells at or above min_confidence")
    boxes: bool = False
    texts: bool = True
    max_texts: int = Field(30, ge=0, description="labels written per image, most confident first")


class SegmentationCheckParams(Strict):
    tiles_per_slide: int = Field(
        4, ge=0, description="tiles per slide: the densest, the darkest, then spread"
    )
    zoom: int = Field(2, ge=1, le=4, description="tile pixels drawn as zoom × zoom, so outlines stay thin")


class GalleryParams(Strict):
    size: int = Field(
        192, ge=32, description="crop side in the gallery, px (crops are read at the slide's finest level)"
    )
    columns: int = Field(5, ge=1)


class AnnotationParams(Strict):
    """Parameters of the ``annotation`` pipeline."""

    colour_by: Literal["label", "cluster"] = Field("label", description="upstream --annotation_color_by")
    overlay: OverlayParams = OverlayParams()
    gallery: GalleryParams = GalleryParams()
    segmentation_check: SegmentationCheckParams = SegmentationCheckParams()
    report_picture_slides: int = Field(
        12,
        ge=0,
        description="slides whose pictures (overviews, contact sheet, segmentation check) the report "
        "embeds: those with a failed slide check first; every slide keeps its line, and every picture "
        "is in data/08_reporting/",
    )
    geojson_gzip_above: int = Field(
        50_000, ge=0, description="cells per slide above which GeoJSON is gzipped"
    )
    spatialdata: bool | Literal["auto"] = Field(
        "auto", description="cells.zarr (SpatialData): auto = when the spatialdata package is installed"
    )
    not_cells: list[str] = Field(
        ["artefact", "artifact", "debris"],
        description="names meaning the object is not a cell (any case): kept under that name in every "
        "output, left out of the report's cell figures",
    )
