"""``kedro run --pipelines=annotation``."""

from kedro.pipeline import Node, Pipeline

from histocluster.pipelines.annotation.nodes import (
    annotate_cells,
    count_cells,
    draw_galleries,
    draw_overlays,
    draw_segmentation_checks,
    draw_slide_overviews,
    export_anndata,
    export_cell_csv,
    export_qupath,
    export_spatialdata,
    export_viewer_json,
    write_report,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                annotate_cells,
                inputs=["cells", "clusters", "cell_labels", "params:annotation"],
                outputs=["annotated_cells", "cell_outlines"],
                name="annotate_cells",
            ),
            Node(
                export_qupath,
                inputs=["annotated_cells", "params:annotation"],
                outputs="qupath_geojson",
                name="export_qupath",
            ),
            Node(
                export_cell_csv,
                inputs=["slides", "annotated_cells"],
                outputs="cell_csv",
                name="export_cell_csv",
            ),
            Node(
                export_anndata,
                inputs=["slides", "annotated_cells", "cell_embeddings", "params:clustering"],
                outputs="cells_h5ad",
                name="export_anndata",
            ),
            Node(
                export_spatialdata,
                inputs=[
                    "slides",
                    "cell_outlines",
                    "cells_h5ad",
                    "slide_thumbnail_png",
                    "params:annotation",
                ],
                outputs="cells_zarr",
                name="export_spatialdata",
            ),
            Node(
                export_viewer_json,
                inputs=["slides", "tiles", "annotated_cells"],
                outputs="viewer_json",
                name="export_viewer_json",
            ),
            Node(
                draw_galleries,
                inputs=[
                    "gallery_members",
                    "gallery_crops",
                    "cluster_summary",
                    "cluster_labels",
                    "params:annotation",
                ],
                outputs="cluster_gallery_figure",
                name="draw_galleries",
            ),
            Node(
                draw_segmentation_checks,
                inputs=["slides", "tiles", "tile_quality", "cells", "params:annotation"],
                outputs="segmentation_check_figure",
                name="draw_segmentation_checks",
            ),
            Node(
                draw_overlays,
                inputs=["slides", "tiles", "annotated_cells", "params:annotation"],
                outputs="cell_overlay_figure",
                name="draw_overlays",
            ),
            Node(
                draw_slide_overviews,
                inputs=["slides", "slide_thumbnail_png", "annotated_cells", "params:annotation"],
                outputs="cell_overview_figure",
                name="draw_slide_overviews",
            ),
            Node(
                count_cells,
                inputs=["annotated_cells", "params:annotation"],
                outputs=["annotation_counts", "label_counts_plot", "report_cells"],
                name="count_cells",
            ),
            Node(
                write_report,
                inputs=[
                    "slides",
                    "tiles",
                    "tile_quality",
                    "report_cells",
                    "cluster_summary",
                    "cluster_labels",
                    "annotation_counts",
                    "tiling_overview_figure",
                    "cell_overview_figure",
                    "tile_contact_sheet_figure",
                    "cluster_gallery_figure",
                    "cluster_map_plot",
                    "cluster_sizes_plot",
                    "label_counts_plot",
                    "slide_checks",
                    "segmentation_check_figure",
                    "params:annotation",
                    "params:classification",
                    "params:clustering",
                ],
                outputs="report_html",
                name="write_report",
            ),
        ]
    )
