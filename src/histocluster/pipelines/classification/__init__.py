"""The ``classification`` pipeline: clusters → names (model and/or person) → every cell."""

from histocluster.pipelines.classification.pipeline import create_pipeline

__all__ = ["create_pipeline"]
