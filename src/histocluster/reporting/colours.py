"""Colours of labels and clusters: one per name, the same in every picture, the GeoJSON
and the report."""

from __future__ import annotations

import colorsys
import hashlib

import pandas as pd

from histocluster.clustering.clusterers import NOISE
from histocluster.clustering.plots import cluster_colours
from histocluster.labelling.cluster_labels import REVIEW, UNLABELLED

NOISE_RGB = (150, 150, 150)


UNSURE_RGB = {UNLABELLED: (128, 128, 128), REVIEW: (255, 170, 0)}


def label_colour(label: str) -> tuple[int, int, int]:
    """A stable, distinct-enough colour for a label name (same name, same colour, in
    every picture, the GeoJSON and the report); grey for unlabelled, orange for review."""
    if label in UNSURE_RGB:
        return UNSURE_RGB[label]
    hue = int(hashlib.sha256(label.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def colour_table(table: pd.DataFrame, colour_by: str) -> tuple[pd.Series, pd.Series, dict]:
    """Per cell: its class name and RGB colour when coloured by ``label`` or ``cluster``,
    and the legend (name → RGB)."""
    if colour_by == "label":
        names = table["label"].astype(str)
        legend = {name: label_colour(name) for name in sorted(names.unique())}
    else:
        hexes = cluster_colours(table["cluster_id"].to_numpy())
        names = table["cluster_id"].map(lambda c: "noise" if c == NOISE else f"cluster {c}")
        legend = {
            ("noise" if c == NOISE else f"cluster {c}"): (NOISE_RGB if c == NOISE else hex_to_rgb(h))
            for c, h in sorted(hexes.items())
            if (table["cluster_id"] == c).any()
        }
    return names, names.map(legend), legend


def colour_mode(table: pd.DataFrame, requested: str) -> str:
    """``requested`` (``label`` or ``cluster``), except that pictures of a run where no
    cell has a label yet are coloured by cluster (said in the log and every title)."""
    if requested == "label" and len(table) and table["label_source"].eq("none").all():
        return "cluster"
    return requested


def legend(table: pd.DataFrame, mode: str) -> dict:
    """Name → RGB of every class the pictures show."""
    return colour_table(table, mode)[2] if len(table) else {}
