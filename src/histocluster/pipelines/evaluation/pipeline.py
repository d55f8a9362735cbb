"""``kedro run --pipelines=evaluation`` (not part of the default run: it needs a bench set)."""

from kedro.pipeline import Node, Pipeline

from histocluster.pipelines.evaluation.nodes import evaluate_segmentation


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                evaluate_segmentation,
                inputs=["params:evaluation", "params:segmentation"],
                outputs=["segmentation_scores", "segmentation_metrics"],
                name="evaluate_segmentation",
            ),
        ]
    )
