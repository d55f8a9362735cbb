"""The physical scale of a slide (µm per level-0 pixel) and where it came from.

In order of trust:

1. ``table``: the person's table beside the slides, ``<slide folder>/slides.csv`` with
   columns ``file,mpp`` (and optionally ``mpp_y``) — :func:`read_scale_table`;
2. ``metadata``: what the scanner wrote into the file;
3. ``objective power``: 10 µm/px divided by the objective power the file names (20× →
   0.5, 40× → 0.25), the convention of Aperio and Hamamatsu scanners — said in the log;
4. ``parameter``: ``tiling.default_mpp``, a guess the slide checks
   (:mod:`histocluster.segmentation.slide_checks`) hold up against the cells it gives.

:func:`resolve_scale` applies that order.
"""

from __future__ import annotations

import math
from pathlib import Path

from histocluster.errors import UserInputError
from histocluster.wsi.spreadsheet import read_rows

#: The per-slide µm/px table's file name, inside the slide folder.
SCALE_TABLE_NAME = "slides.csv"
#: µm/px outside this range is not a microscope scan (a placeholder, a typo, a unit mix-up).
PLAUSIBLE_MPP = (0.05, 20.0)
#: µm/px × objective power for the usual scanners (20× → 0.5 µm/px).
MPP_TIMES_POWER = 10.0


class ScaleTableError(UserInputError):
    """The per-slide µm/px table cannot be used; the message names the file and line."""


def objective_mpp(power: float | None) -> float | None:
    """µm/px from an objective power (``10 / power``), or None when unknown or not positive."""
    if power is None or not math.isfinite(float(power)) or float(power) <= 0:
        return None
    return MPP_TIMES_POWER / float(power)


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        raise ScaleTableError(f"{path}: line {line}: {column} '{text}' is not a number") from None
    low, high = PLAUSIBLE_MPP
    if not (low <= value <= high):
        raise ScaleTableError(
            f"{path}: line {line}: {column} {value:g} µm/px is outside {low:g}–{high:g} "
            "(µm per pixel: 0.25 at 40×, 0.5 at 20×)"
        )
    return value


def read_scale_table(path: str | Path, slide_files: list[str]) -> dict[str, tuple[float, float]]:
    """File name → (µm/px x, µm/px y) from the table at ``path``; {} when there is none.

    The table is a CSV with a header naming ``file`` and ``mpp`` (``mpp_y`` optional, else
    square pixels), as a spreadsheet saves it too (UTF-8 with BOM, CRLF, ``;`` or tab).

    Raises:
        ScaleTableError: a missing column, a value that is not a plausible µm/px, a file
            named twice, or a file that is not one of ``slide_files`` (a typo would
            otherwise be ignored); the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    header, rows = read_rows(path)
    if not {"file", "mpp"} <= set(header):
        raise ScaleTableError(
            f"{path}: needs the columns file,mpp (optionally mpp_y); its header is {header}"
        )
    known = set(slide_files)
    table: dict[str, tuple[float, float]] = {}
    lines: dict[str, int] = {}
    for line, row in rows:
        cells = dict(zip(header, (cell.strip() for cell in row), strict=False))
        name = cells.get("file", "")
        if name not in known:
            raise ScaleTableError(
                f"{path}: line {line}: '{name}' is not a slide in {path.parent} "
                f"(slides: {', '.join(sorted(known)) or 'none'})"
            )
        if name in lines:
            raise ScaleTableError(f"{path}: '{name}' is given twice, on lines {lines[name]} and {line}")
        mpp_x = _number(cells.get("mpp", ""), path, line, "mpp")
        mpp_y = _number(cells["mpp_y"], path, line, "mpp_y") if cells.get("mpp_y") else mpp_x
        table[name], lines[name] = (mpp_x, mpp_y), line
    return table


def resolve_scale(
    metadata: tuple[float, float] | None,
    objective_power: float | None,
    table: tuple[float, float] | None,
    default_mpp: float,
) -> tuple[float, float, str]:
    """(µm/px x, µm/px y, source): the table's entry, else the metadata, else the objective
    power, else ``default_mpp`` (sources ``table``, ``metadata``, ``objective power``,
    ``parameter``)."""
    if table is not None:
        return float(table[0]), float(table[1]), "table"
    if metadata is not None:
        return float(metadata[0]), float(metadata[1]), "metadata"
    from_power = objective_mpp(objective_power)
    if from_power is not None:
        return from_power, from_power, "objective power"
    return float(default_mpp), float(default_mpp), "parameter"


#: How each ``mpp_source`` reads in a sentence ("0.500 µm/px from the file's metadata").
SOURCE_WORDS = {
    "table": "from data/01_raw/slides/slides.csv",
    "metadata": "from the file's metadata",
    "objective power": "from the objective power",
    "estimated": "estimated from the nuclei",
    "parameter": "assumed, tiling.default_mpp",
}


def describe_source(source: str) -> str:
    """The words for an ``mpp_source`` (the source itself if it is not one of ours)."""
    return SOURCE_WORDS.get(source, f"from {source}")
