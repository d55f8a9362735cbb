"""Which run made each table, and from which runs' tables: so that a stage never combines
tables of different runs without saying so.

Every versioned output of a run is saved as ``<path>/<run>/<file>`` (``<run>`` is the
run's timestamp, Kedro's save version). Beside it the run writes ``<file>.run.json``::

    {"run": "2026-12-03T17.40.02.123Z",          # the run that made this file
     "made_by": "cluster_cells",                 # the node
     "inputs": {"cells": "2026-12-03T17.10.00.000Z", ...},   # the versions it read
     "lineage": {"clusters": "2026-12-03T17.40.02.123Z",
                 "cells": "2026-12-03T17.10.00.000Z", "tiles": ..., "slides": ...}}

``lineage`` names, for this table and every table it was made from (directly or not), the
run that made that table. Two inputs of a node are consistent when their lineages agree
on every table both name: clusters made from the cells of run A go with the cells of run
A, not with newer cells that a killed run saved before it could cluster them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from histocluster.atomic_files import atomic_path
from histocluster.errors import UserInputError

#: Added to a versioned file's name for its run record.
RECORD_SUFFIX = ".run.json"
#: Saved models made to be used on other runs' cells (a cell-type model labels slides it
#: never saw): read as an input, only their own version counts, not the tables they came from.
PORTABLE_MODELS = frozenset({"cell_type_model"})

Lineage = dict[str, str]


def record_path(file: str | Path) -> Path:
    """The run record beside a saved file (``cells.parquet`` → ``cells.parquet.run.json``)."""
    file = Path(file)
    return file.with_name(file.name + RECORD_SUFFIX)


def write_record(
    file: str | Path, *, run: str, made_by: str, inputs: Mapping[str, str], lineage: Mapping[str, str]
) -> Path:
    """Writes the run record of ``file`` (all or nothing) and returns its path."""
    path = record_path(file)
    record = {
        "run": run,
        "made_by": made_by,
        "inputs": dict(inputs),
        "lineage": dict(sorted(lineage.items())),
    }
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def read_lineage(file: str | Path, name: str, version: str) -> Lineage:
    """The lineage of the table ``name`` saved at ``file`` by run ``version``: from its run
    record, or only ``{name: version}`` for a file saved before records existed (or by
    hand), and only ``{name: version}`` for :data:`PORTABLE_MODELS`. A record that cannot
    be read is an error naming it."""
    path = record_path(file)
    if name in PORTABLE_MODELS or not path.is_file():
        return {name: version}
    try:
        lineage = dict(json.loads(path.read_text(encoding="utf-8"))["lineage"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MixedRunsError(
            f"{path}: not a readable run record ({exc}). Delete the folder {path.parent} "
            f"(that run's {name}) or run `kedro run` again."
        ) from exc
    lineage[name] = version
    return lineage


def merge(lineages: Mapping[str, Lineage]) -> Lineage:
    """One lineage from several: each table with the newest run named for it (the same
    run throughout when they are consistent, see :func:`conflicts`)."""
    merged: Lineage = {}
    for lineage in lineages.values():
        for table, run in lineage.items():
            merged[table] = max(run, merged.get(table, run))
    return merged


@dataclass(frozen=True)
class Conflict:
    """Inputs of one node that disagree on which run made ``table``."""

    table: str
    newest: str  #: the newest of the runs named for it
    stale: tuple[str, ...]  #: inputs that name an older run
    stale_runs: tuple[str, ...]  #: the older runs, in the order of ``stale``


def conflicts(lineages: Mapping[str, Lineage]) -> list[Conflict]:
    """Tables that two inputs (name → lineage) trace to different runs, with the inputs
    that trace them to an older run than the newest one named (run names are timestamps,
    so they sort in time)."""
    runs: dict[str, dict[str, str]] = {}
    for name, lineage in lineages.items():
        for table, run in lineage.items():
            runs.setdefault(table, {})[name] = run
    found = []
    for table, by_input in sorted(runs.items()):
        if len(set(by_input.values())) < 2:
            continue
        newest = max(by_input.values())
        stale = sorted(name for name, run in by_input.items() if run != newest)
        found.append(Conflict(table, newest, tuple(stale), tuple(by_input[name] for name in stale)))
    return found


class MixedRunsError(UserInputError):
    """A node's inputs come from different runs."""


def describe_conflicts(found: Mapping[str, list[Conflict]], fix: str) -> str:
    """The ``Error:`` text for :class:`MixedRunsError`: for each stale input (node → its
    conflicts), which tables of which run it was made from and which run they are from
    now, and the command that remakes the stale inputs."""
    stale: dict[tuple[str, str, str], list[str]] = {}
    for conflicts_of_node in found.values():
        for conflict in conflicts_of_node:
            for name, run in zip(conflict.stale, conflict.stale_runs, strict=True):
                tables = stale.setdefault((name, run, conflict.newest), [])
                if conflict.table not in tables:
                    tables.append(conflict.table)
    lines = [
        f"The inputs of {', '.join(found)} come from different runs, and combining them would mix "
        "the results of one run with those of another (nothing was run):"
    ]
    for (name, run, newest), tables in stale.items():
        if tables == [name]:
            lines.append(
                f"  {name} is from run {run}, but the other inputs were made from the {name} of run {newest}"
            )
        else:
            lines.append(
                f"  {name} was made from the {', '.join(tables)} of run {run}; "
                f"{'that table is' if len(tables) == 1 else 'those are'} now from run {newest}"
            )
    lines.append(
        "An earlier run stopped before it remade everything, or remade only part of it "
        "(`--pipelines=apply` replaces the clusters with the cells it placed). "
        f"Fix: `{fix}` (or `kedro run` for everything)."
    )
    return "\n".join(lines)


def require_same_cells(cells: Iterable[str], others: Mapping[str, Iterable[str]], fix: str) -> None:
    """Raises :class:`MixedRunsError` unless every table in ``others`` (name → its cell ids)
    holds exactly the cells of the cell table: a table of other cells (clusters of an older
    run, say) would otherwise turn into cells silently shown as noise or unlabelled."""
    reference = set(cells)
    problems = []
    for name, ids in others.items():
        ids = set(ids)
        missing, extra = len(reference - ids), len(ids - reference)
        if missing or extra:
            problems.append(
                f"  {name} holds {len(ids):,} cells: {missing:,} of the {len(reference):,} cells "
                f"have no row there, and {extra:,} of its rows name cells the cell table lacks"
            )
    if problems:
        raise MixedRunsError(
            "The tables do not describe the same cells (they come from different runs, or one "
            "was edited):\n" + "\n".join(problems) + f"\nFix: `{fix}` (or `kedro run` for everything)."
        )
