"""The independent dark-blob detector and the outline test it is scored with."""

from __future__ import annotations

import numpy as np
import shapely

from histocluster.segmentation.seed_check import nucleus_seeds, outlined

from .conftest import disc

NUCLEUS = (70, 40, 140)  # haematoxylin-like purple on a pink background
BACKGROUND = (235, 190, 215)


def two_nuclei() -> np.ndarray:
    rgb = np.empty((120, 160, 3), np.uint8)
    rgb[:] = BACKGROUND
    for centre in ((40, 40), (80, 120)):
        rgb[disc(rgb.shape[:2], centre, 8)] = NUCLEUS  # 8 px = 4 µm at 0.5 µm/px
    return rgb


def test_each_dark_nucleus_gives_one_seed_at_its_centre_and_glass_gives_none():
    seeds = nucleus_seeds(two_nuclei(), 0.5)
    found = sorted(zip(seeds["row"], seeds["col"], strict=True))
    assert len(found) == 2, found
    assert (
        np.hypot(found[0][0] - 40, found[0][1] - 40) <= 2
        and np.hypot(found[1][0] - 80, found[1][1] - 120) <= 2
    )
    assert nucleus_seeds(np.full((64, 64, 3), 245, np.uint8), 0.5).empty
    assert nucleus_seeds(np.full((64, 64, 3), BACKGROUND, np.uint8), 0.5).empty  # pink alone: nothing


def test_a_seed_is_outlined_when_a_polygon_holds_it_or_lies_within_the_tolerance():
    polygons = np.array([shapely.to_wkb(shapely.box(0, 0, 10, 10))], dtype=object)  # as in the cell table
    x, y = np.array([5.0, 11.0, 30.0]), np.array([5.0, 5.0, 5.0])
    assert outlined(x, y, polygons).tolist() == [True, False, False]
    assert outlined(x, y, polygons, tolerance=2.0).tolist() == [True, True, False]
    assert outlined(x, y, np.array([], dtype=object)).tolist() == [False, False, False]
