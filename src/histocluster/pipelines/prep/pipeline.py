"""A named run of several stages (slides → tiles judged, cells found, contact sheets); it has
no nodes of its own. The quality check runs in the segmentation pass, where each tile is
read once, so the upstream "prep" mode (tiling + filtering) now includes that pass."""

from kedro.pipeline import Pipeline

from histocluster.pipelines.filtering import create_pipeline as filtering
from histocluster.pipelines.segmentation import create_pipeline as segmentation
from histocluster.pipelines.tiling import create_pipeline as tiling


def create_pipeline(**kwargs) -> Pipeline:
    return tiling() + segmentation() + filtering()
