"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: Pipelines left out of the default `kedro run`: they need data a user may not have
#: (ground truth; a cell-type model trained by an earlier run).
OPTIONAL = ("evaluation", "apply")
#: Folders that only combine other pipelines (upstream's pipeline modes).
COMPOSITES = ("prep", "analysis", "relabel")


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline under ``pipelines/`` by its folder name (Kedro loads only the ones a
    run asks for), and ``__default__``: all stages except the optional ones
    (``kedro run --pipelines=evaluation`` runs those)."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        p for name, p in pipelines.items() if name not in OPTIONAL + COMPOSITES and name != "__default__"
    )
    return pipelines
