"""``kedro run --pipelines=filtering``: the contact sheets of the tile-quality check that
the segmentation pass made (run after it)."""

from kedro.pipeline import Node, Pipeline

from histocluster.pipelines.filtering.nodes import draw_contact_sheets


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                draw_contact_sheets,
                inputs=["tiles", "tile_quality", "tile_preview_png", "params:filtering"],
                outputs="tile_contact_sheet_figure",
                name="draw_contact_sheets",
            ),
        ]
    )
