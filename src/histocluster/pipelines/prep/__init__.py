"""``kedro run --pipelines=prep``: slides → kept tiles (tiling + filtering)."""

from histocluster.pipelines.prep.pipeline import create_pipeline

__all__ = ["create_pipeline"]
