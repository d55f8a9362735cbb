"""The ``apply`` pipeline: a saved cell-type model labels the cells of new slides, without
clustering or naming again."""

from histocluster.pipelines.apply.pipeline import create_pipeline

__all__ = ["create_pipeline"]
