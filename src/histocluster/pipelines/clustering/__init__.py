"""The ``clustering`` pipeline: the cell table → embeddings → clusters, map, summary."""

from histocluster.pipelines.clustering.pipeline import create_pipeline

__all__ = ["create_pipeline"]
