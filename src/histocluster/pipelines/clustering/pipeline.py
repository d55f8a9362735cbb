"""``kedro run --pipelines=clustering``."""

from kedro.pipeline import Node, Pipeline

from histocluster.pipelines.clustering.nodes import (
    cluster,
    crop_gallery_cells,
    embed_cells,
    pick_gallery_cells,
    plot_clusters,
    reduce_embeddings,
    summarise_clusters,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                embed_cells,
                inputs=["slides", "cells", "cell_deep_features", "params:clustering"],
                outputs="cell_embeddings",
                name="embed_cells",
            ),
            Node(
                reduce_embeddings,
                inputs=["cell_embeddings", "params:clustering"],
                outputs=["reduced_embeddings", "cell_map", "reducer"],
                name="reduce_embeddings",
            ),
            Node(
                cluster,
                inputs=["reduced_embeddings", "cell_map", "cells", "params:clustering"],
                outputs=["clusters", "clusterer"],
                name="cluster_cells",
            ),
            Node(
                summarise_clusters,
                inputs=["cells", "clusters", "cell_deep_features", "params:clustering"],
                outputs=["cluster_summary", "cluster_representatives"],
                name="summarise_clusters",
            ),
            Node(
                pick_gallery_cells,
                inputs=["clusters", "cluster_representatives", "params:clustering"],
                outputs="gallery_members",
                name="pick_gallery_cells",
            ),
            Node(
                crop_gallery_cells,
                inputs=["slides", "tiles", "cells", "gallery_members", "params:clustering"],
                outputs=["representative_crops", "gallery_crops"],
                name="crop_gallery_cells",
            ),
            Node(
                plot_clusters,
                inputs=["clusters", "cluster_summary", "params:clustering"],
                outputs=["cluster_map_plot", "cluster_map_interactive", "cluster_sizes_plot"],
                name="plot_clusters",
            ),
        ]
    )
