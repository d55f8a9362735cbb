"""``kedro run --pipelines=apply``: the slides in data/01_raw/slides are tiled, filtered and
segmented (finished slides are reused), their cells embedded, placed in the clusters of the
run that trained the saved cell-type model and labelled by it; then annotation as usual."""

from kedro.pipeline import Node, Pipeline

from histocluster.pipelines.annotation import create_pipeline as annotation
from histocluster.pipelines.apply.nodes import label_cells_with_model, name_clusters_by_model, place_cells
from histocluster.pipelines.clustering import create_pipeline as clustering
from histocluster.pipelines.filtering import create_pipeline as filtering
from histocluster.pipelines.segmentation import create_pipeline as segmentation
from histocluster.pipelines.tiling import create_pipeline as tiling

#: Clustering nodes apply reuses as they are: nothing in them fits a clustering.
REUSED_CLUSTERING_NODES = (
    "embed_cells",
    "summarise_clusters",
    "pick_gallery_cells",
    "crop_gallery_cells",
    "plot_clusters",
)


def create_pipeline(**kwargs) -> Pipeline:
    own = Pipeline(
        [
            Node(
                place_cells,
                inputs=["cells", "cell_embeddings", "cell_type_model"],
                outputs="clusters",
                name="place_cells",
            ),
            Node(
                label_cells_with_model,
                inputs=["clusters", "cell_embeddings", "cell_type_model", "params:apply"],
                outputs=["cell_labels", "label_counts"],
                name="label_cells_with_model",
            ),
            Node(
                name_clusters_by_model,
                inputs=["cell_labels", "cell_type_model", "params:apply"],
                outputs="cluster_labels",
                name="name_clusters_by_model",
            ),
        ]
    )
    reused = clustering().only_nodes(*REUSED_CLUSTERING_NODES)
    return tiling() + filtering() + segmentation() + reused + own + annotation()
