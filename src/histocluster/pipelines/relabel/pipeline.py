"""A named run of several stages (after editing the labels file: names → every cell → reports); it has no nodes of its own."""

from kedro.pipeline import Pipeline

from histocluster.pipelines.annotation import create_pipeline as annotation
from histocluster.pipelines.classification import create_pipeline as classification


def create_pipeline(**kwargs) -> Pipeline:
    return classification() + annotation()
