"""Colours of labels and clusters: one per name, the same in every picture, the GeoJSON
and the report."""

from __future__ import annotations

import colorsys
import hashlib
import itertools
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import pandas as pd

from histocluster.clustering.clusterers import NOISE
from histocluster.clustering.plots import cluster_colours
from histocluster.labelling.cluster_labels import REVIEW, UNLABELLED

NOISE_RGB = (150, 150, 150)

#: Cells no one has named yet, and names a person should check.
UNSURE_RGB = {UNLABELLED: (128, 128, 128), REVIEW: (255, 0, 255)}

#: Conventional colours for common cell types: QuPath's defaults where it has the class
#: (Tumor, Stroma, Immune cells, Necrosis, Other), HoVer-Net/PanNuke's hues otherwise
#: (epithelial orange, connective tissue blue-green), white for what is not a cell.
#: Matched on the lower-cased name.
KNOWN_RGB: dict[str, tuple[int, int, int]] = {
    **dict.fromkeys(["tumour", "tumor", "tumour cell", "tumor cell", "neoplastic", "malignant"], (200, 0, 0)),
    **dict.fromkeys(["stroma", "stromal", "fibroblast", "connective", "connective tissue"], (150, 200, 150)),
    **dict.fromkeys(["immune cells", "immune", "lymphocyte", "inflammatory", "lymphocytes"], (160, 90, 160)),
    **dict.fromkeys(["necrosis", "necrotic", "dead"], (50, 50, 50)),
    **dict.fromkeys(["other"], (255, 200, 0)),
    **dict.fromkeys(["epithelial", "epithelium", "epithelial cell", "keratinocyte"], (255, 128, 0)),
    **dict.fromkeys(["endothelial", "endothelial cell", "endothelium"], (0, 140, 200)),
    **dict.fromkeys(["plasma cell", "plasma cells"], (90, 40, 200)),
    **dict.fromkeys(["macrophage", "macrophages", "histiocyte"], (255, 100, 120)),
    **dict.fromkeys(["neutrophil", "neutrophils", "granulocyte"], (0, 200, 200)),
    **dict.fromkeys(["smooth muscle", "muscle", "myocyte"], (120, 60, 20)),
    **dict.fromkeys(["adipocyte", "fat"], (240, 230, 140)),
    # Not cells (annotation.not_cells): white, apart from every cell type and from the greys
    # of unnamed cells and noise; plain on tissue, gone on glass.
    **dict.fromkeys(["artefact", "artifact", "debris"], (255, 255, 255)),
}

#: Colours for other names, far enough from each other and from the ones above
#: (Kelly's 22 colours of maximum contrast; white, black and grey, the unnamed cells' colour, left out).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (243, 195, 0),
    (135, 86, 146),
    (243, 132, 0),
    (161, 202, 241),
    (190, 0, 50),
    (194, 178, 128),
    (0, 136, 86),
    (230, 143, 172),
    (0, 103, 165),
    (249, 147, 121),
    (96, 78, 151),
    (246, 166, 0),
    (179, 68, 108),
    (220, 211, 0),
    (136, 45, 23),
    (141, 182, 0),
    (101, 69, 34),
    (226, 88, 34),
    (43, 61, 38),
)

#: No two labels of one run closer than this: CIE76 colour difference (ΔE in CIELAB, where
#: about 2 is just noticeable and 30 plainly different colours).
MIN_DISTANCE = 30.0

#: More colours when a run has many names: an RGB grid without white.
_LATTICE = [c for c in itertools.product((0, 85, 170, 255), repeat=3) if c != (255, 255, 255)]


@lru_cache(maxsize=4096)
def _lab(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    from skimage.color import rgb2lab

    return tuple(float(v) for v in rgb2lab(np.array(colour, float).reshape(1, 1, 3) / 255).ravel())


def colour_difference(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """CIE76 ΔE between two RGB colours (0–255): the distance in CIELAB."""
    return float(np.linalg.norm(np.subtract(_lab(a), _lab(b))))


def _hue_colour(position: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(position % 1.0, 0.75, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def label_colours(labels: Iterable[str]) -> dict[str, tuple[int, int, int]]:
    """A colour for each label of a run, no two alike: grey for ``unlabelled``, magenta for
    ``review``, the conventional colour for known cell types (:data:`KNOWN_RGB`), and for
    every other name a colour of :data:`PALETTE` chosen by the name's hash (so a name keeps
    its colour from run to run unless another name already took it), skipping colours
    within :data:`MIN_DISTANCE` of one already given. Deterministic for a set of names."""
    names = sorted({str(label) for label in labels})
    given = {name: UNSURE_RGB[name] for name in names if name in UNSURE_RGB}  # always grey, magenta
    for name in names:  # then the conventional colours, while they stay apart
        fixed = KNOWN_RGB.get(name.strip().lower())
        if fixed is not None and name not in given:
            if not any(colour_difference(fixed, c) < MIN_DISTANCE for c in given.values()):
                given[name] = fixed
    for name in names:
        if name in given:
            continue
        start = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        candidates = [PALETTE[(start + k) % len(PALETTE)] for k in range(len(PALETTE))]
        candidates += [_hue_colour(start / 0xFFFFFFFF + k / 97) for k in range(97)] + list(_LATTICE)

        def nearest(colour: tuple[int, int, int]) -> float:
            return min((colour_difference(colour, used) for used in given.values()), default=1000.0)

        far = next((c for c in candidates if nearest(c) >= MIN_DISTANCE), None)
        given[name] = far if far is not None else max(candidates, key=nearest)  # else the farthest
    return {name: given[name] for name in names}


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def colour_table(table: pd.DataFrame, colour_by: str) -> tuple[pd.Series, pd.Series, dict]:
    """Per cell: its class name and RGB colour when coloured by ``label`` or ``cluster``,
    and the legend (name → RGB)."""
    if colour_by == "label":
        names = table["label"].astype(str)
        legend = label_colours(names.unique())
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
