"""``kedro run --pipelines=filtering``."""

from kedro.pipeline import Node, Pipeline

from histocluster.pipelines.filtering.nodes import draw_contact_sheets, measure_tile_quality


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                measure_tile_quality,
                inputs=["slides", "tiles", "params:filtering", "params:tiling"],
                outputs="tile_quality",
                name="measure_tile_quality",
            ),
            Node(
                draw_contact_sheets,
                inputs=["slides", "tiles", "tile_quality", "params:filtering"],
                outputs="tile_contact_sheet_figure",
                name="draw_contact_sheets",
            ),
        ]
    )
