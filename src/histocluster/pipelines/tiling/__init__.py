"""The ``tiling`` pipeline: slides → slide table, tissue masks, tile grid."""

from histocluster.pipelines.tiling.pipeline import create_pipeline

__all__ = ["create_pipeline"]
