"""Validated parameter models, one per pipeline (``conf/base/parameters_<name>.yml``).

The models live in each stage package's ``settings`` module (pydantic only, no numerical
libraries), so importing this module — every ``kedro`` command does — stays cheap.
Every model forbids unknown keys, so a typo such as ``tile_sise`` is an error that
names the key instead of a silently ignored setting. :func:`validate_parameters` checks
them all before a run starts (see :mod:`histocluster.hooks`).
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from histocluster.clustering.settings import ClusteringParams
from histocluster.errors import UserInputError
from histocluster.labelling.settings import ApplyParams, ClassificationParams
from histocluster.reporting.settings import AnnotationParams
from histocluster.segmentation.settings import EvaluationParams, SegmentationParams
from histocluster.strict_model import Strict
from histocluster.wsi.settings import FilteringParams, TilingParams

__all__ = [
    "PARAMETER_MODELS",
    "AnnotationParams",
    "ApplyParams",
    "ClassificationParams",
    "ClusteringParams",
    "EvaluationParams",
    "FilteringParams",
    "ParameterError",
    "SegmentationParams",
    "TilingParams",
    "parse",
    "validate_parameters",
]

#: Top-level parameter key → model. A new pipeline adds its model here.
PARAMETER_MODELS: dict[str, type[Strict]] = {
    "tiling": TilingParams,
    "filtering": FilteringParams,
    "segmentation": SegmentationParams,
    "evaluation": EvaluationParams,
    "clustering": ClusteringParams,
    "classification": ClassificationParams,
    "apply": ApplyParams,
    "annotation": AnnotationParams,
}


class ParameterError(UserInputError, ValueError):
    """Parameters do not fit their model; the message lists every problem."""


def _describe(error: ValidationError, section: str) -> str:
    """One line per problem: where, what, and the value given when it is one value (a
    check across fields names its fields in its message; the whole section is not
    repeated)."""
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in (section, *item["loc"]))
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            lines.append(f"  {where}: unknown parameter (typo?)")
            continue
        message = item["msg"].removeprefix("Value error, ")
        given = item.get("input")
        if isinstance(given, dict) or len(repr(given)) > 80:
            lines.append(f"  {where}: {message}")
        else:
            lines.append(f"  {where}: {message} (got {given!r})")
    return "\n".join(lines)


def parse(section: str, values: Any) -> Strict:
    """Validate one section; raises :class:`ParameterError` naming every bad key."""
    model = PARAMETER_MODELS[section]
    try:
        return model.model_validate(values if values is not None else {})
    except ValidationError as exc:
        raise ParameterError(
            f"Invalid parameters in '{section}' (conf/*/parameters_{section}.yml or --params):\n"
            + _describe(exc, section)
        ) from None


def _unknown_sections(params: dict[str, Any]) -> list[str]:
    """Top-level keys that no pipeline reads (``--params tilling.max_tiles=4``), each
    with the closest known one."""
    problems = []
    for key in sorted(set(params) - set(PARAMETER_MODELS), key=str):
        close = difflib.get_close_matches(str(key), list(PARAMETER_MODELS), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(PARAMETER_MODELS)}"
        problems.append(f"Unknown parameters '{key}' (from conf/*/parameters*.yml or --params): {hint}")
    return problems


def validate_parameters(params: dict[str, Any]) -> dict[str, Strict]:
    """Validate every known section of the run's parameters, all problems at once; a
    top-level key that is not a pipeline's section is one of them."""
    problems, parsed = _unknown_sections(params), {}
    for section in PARAMETER_MODELS:
        if section not in params:
            problems.append(f"Missing parameters '{section}' (conf/base/parameters_{section}.yml)")
            continue
        try:
            parsed[section] = parse(section, params[section])
        except ParameterError as exc:
            problems.append(str(exc))
    if not problems:
        problems = _across_sections(parsed)
    if problems:
        raise ParameterError("\n".join(problems))
    return parsed


def _across_sections(parsed: dict[str, Strict]) -> list[str]:
    """Settings of one pipeline that need a setting of another."""
    problems = []
    features = parsed["segmentation"].cell_features
    clustering = parsed["clustering"]
    deep = clustering.deep_embedder
    if deep is not None and features.deep != deep:
        problems.append(
            f"clustering.embedders has {deep}, but segmentation.cell_features.deep is "
            f"'{features.deep}': the segmentation pass computes the network's features; set "
            f"segmentation.cell_features.deep: {deep}" + (" (as conf/gpu does)" if deep == "resnet50" else "")
        )
    if "morphology" in clustering.embedders and clustering.morphology.texture and not features.texture:
        problems.append(
            "clustering.morphology.texture is true, but segmentation.cell_features.texture is false: "
            "the segmentation pass computes the texture features; turn one on or the other off"
        )
    return problems
