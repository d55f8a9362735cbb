"""A named run of several stages (kept tiles → labelled cells); it has no nodes of its own."""

from kedro.pipeline import Pipeline

from histocluster.pipelines.classification import create_pipeline as classification
from histocluster.pipelines.clustering import create_pipeline as clustering
from histocluster.pipelines.segmentation import create_pipeline as segmentation


def create_pipeline(**kwargs) -> Pipeline:
    return segmentation() + clustering() + classification()
