"""The ``annotation`` pipeline: overlays, galleries, QuPath GeoJSON, viewer JSON, counts, report."""

from histocluster.pipelines.annotation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
