"""``kedro run --pipelines=tiling``."""

from kedro.pipeline import Node, Pipeline

from histocluster.pipelines.tiling.nodes import (
    describe_slides,
    detect_tissue_masks,
    draw_tiling_overviews,
    export_tile_images,
    plan_tiles,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                describe_slides,
                inputs=["raw_slides", "params:tiling"],
                outputs=["slides", "slide_thumbnail_png", "slide_regions"],
                name="describe_slides",
            ),
            Node(
                detect_tissue_masks,
                inputs=["slides", "slide_thumbnail_png", "params:tiling"],
                outputs="tissue_mask_png",
                name="detect_tissue_masks",
            ),
            Node(
                plan_tiles,
                inputs=["slides", "tissue_mask_png", "slide_regions", "params:tiling"],
                outputs="tiles",
                name="plan_tiles",
            ),
            Node(
                draw_tiling_overviews,
                inputs=["slides", "slide_thumbnail_png", "tissue_mask_png", "tiles"],
                outputs="tiling_overview_figure",
                name="draw_tiling_overviews",
            ),
            Node(
                export_tile_images,
                inputs=["slides", "tiles", "params:tiling"],
                outputs="tile_image_png",
                name="export_tile_images",
            ),
        ]
    )
