"""``kedro run --pipelines=classification``."""

from kedro.pipeline import Node, Pipeline

from histocluster.pipelines.classification.nodes import (
    ask_model,
    label_cells,
    label_clusters,
    train_cell_type_model,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                ask_model,
                inputs=["cluster_representatives", "representative_crops", "params:classification"],
                outputs="representative_answers",
                name="ask_model",
            ),
            Node(
                label_clusters,
                inputs=[
                    "representative_answers",
                    "cluster_summary",
                    "clusters",
                    "cell_embeddings",
                    "previous_cell_type_model",
                    "params:classification",
                ],
                outputs="cluster_labels",
                name="label_clusters",
            ),
            Node(
                label_cells,
                inputs=[
                    "clusters",
                    "cluster_labels",
                    "cell_embeddings",
                    "reducer",
                    "clusterer",
                    "params:classification",
                ],
                outputs=["cell_labels", "label_counts"],
                name="label_cells",
            ),
            Node(
                train_cell_type_model,
                inputs=[
                    "cell_labels",
                    "cluster_labels",
                    "cluster_representatives",
                    "cell_embeddings",
                    "reducer",
                    "clusterer",
                    "params:classification",
                    "params:clustering",
                ],
                outputs="cell_type_model",
                name="train_cell_type_model",
            ),
        ]
    )
