"""The ``evaluation`` pipeline: segmentation scored against ground truth."""

from histocluster.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
