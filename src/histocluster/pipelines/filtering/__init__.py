"""The ``filtering`` pipeline: tile quality metrics, keep flag and reason."""

from histocluster.pipelines.filtering.pipeline import create_pipeline

__all__ = ["create_pipeline"]
