"""``kedro run --pipelines=analysis``: kept tiles → labelled cells (segmentation + clustering + classification)."""

from histocluster.pipelines.analysis.pipeline import create_pipeline

__all__ = ["create_pipeline"]
