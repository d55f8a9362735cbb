"""``kedro run --pipelines=segmentation``."""

from kedro.pipeline import Node, Pipeline

from histocluster.pipelines.segmentation.nodes import segment_cells


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                segment_cells,
                inputs=["slides", "tiles", "tile_quality", "params:segmentation"],
                outputs=["cells", "label_masks"],
                name="segment_cells",
            ),
        ]
    )
