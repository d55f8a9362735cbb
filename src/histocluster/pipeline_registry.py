"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: Pipelines left out of the default `kedro run`: they need data a user may not have.
OPTIONAL = ("evaluation",)

#: Named runs of several stages (upstream's pipeline modes).
COMPOSITES = {
    "prep": ("tiling", "filtering"),  # slides → kept tiles
    "analysis": ("segmentation", "clustering", "classification"),  # kept tiles → labelled cells
    "relabel": ("classification", "annotation"),  # after editing the labels file
}


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline under ``pipelines/`` by its folder name, the composites above, and
    ``__default__``: all of them except the optional ones (``kedro run --pipelines=evaluation``
    runs those)."""
    pipelines = find_pipelines(raise_errors=True)
    for name, parts in COMPOSITES.items():
        pipelines[name] = sum(pipelines[p] for p in parts)
    pipelines["__default__"] = sum(
        p for name, p in pipelines.items() if name not in OPTIONAL and name not in COMPOSITES
    )
    return pipelines
