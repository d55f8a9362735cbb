"""The ``segmentation`` pipeline: kept tiles → the cell table."""

from histocluster.pipelines.segmentation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
