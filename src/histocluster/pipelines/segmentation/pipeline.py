"""``kedro run --pipelines=segmentation``."""

from kedro.pipeline import Node, Pipeline

from histocluster.pipelines.segmentation.nodes import check_slides, segment_tiles


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                segment_tiles,
                inputs=["slides", "tiles", "params:tiling", "params:filtering", "params:segmentation"],
                outputs=["tile_quality", "cells", "cell_deep_features", "label_masks", "tile_preview_png"],
                name="segment_tiles",
            ),
            Node(
                check_slides,
                inputs=["slides", "tiles", "tile_quality", "cells", "params:segmentation"],
                outputs="slide_checks",
                name="check_slides",
            ),
        ]
    )
