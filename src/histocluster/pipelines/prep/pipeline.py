"""A named run of several stages (slides → kept tiles); it has no nodes of its own."""

from kedro.pipeline import Pipeline

from histocluster.pipelines.filtering import create_pipeline as filtering
from histocluster.pipelines.tiling import create_pipeline as tiling


def create_pipeline(**kwargs) -> Pipeline:
    return tiling() + filtering()
