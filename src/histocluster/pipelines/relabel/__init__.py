"""``kedro run --pipelines=relabel``: after editing the labels file: names → every cell → reports (classification + annotation)."""

from histocluster.pipelines.relabel.pipeline import create_pipeline

__all__ = ["create_pipeline"]
