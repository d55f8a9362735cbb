"""An independent check of a segmentation: dark blobs a simple detector finds that no
outline covers.

The detector knows nothing of the segmenter: haematoxylin density (colour deconvolution),
smoothed at nucleus scale, and its local maxima above Otsu's threshold (with a floor, so
bare glass gives none). It over-counts (a large or textured nucleus can give two maxima)
and sees any dark blob, so its "missed" count is an upper bound; its value is that it
does not share the segmenter's blind spots — dark, elongated, crowded nuclei.

Pure functions over arrays and the cell table; ``bench/bench_missed_nuclei.py`` runs it on
a run's outputs and draws the picture.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely


def nucleus_seeds(
    rgb: np.ndarray, mpp: float, sigma_um: float = 1.5, distance_um: float = 3.0, floor: float = 0.15
) -> pd.DataFrame:
    """Dark-blob centres of an RGB tile: columns ``row``, ``col`` (tile pixels) and
    ``haematoxylin`` (smoothed density there).

    Args:
        rgb: the tile, uint8.
        mpp: its µm/px (sizes below are in µm).
        sigma_um: Gaussian smoothing of the haematoxylin density.
        distance_um: least distance between two seeds.
        floor: least haematoxylin density of a seed, whatever Otsu says.
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu

    from histocluster.wsi.stain import haematoxylin

    density = ndi.gaussian_filter(haematoxylin(rgb).astype(np.float32), sigma_um / mpp)
    if float(density.max()) <= floor:
        return pd.DataFrame({"row": [], "col": [], "haematoxylin": []})
    threshold = max(floor, float(threshold_otsu(density)))
    peaks = peak_local_max(
        density, min_distance=max(1, round(distance_um / mpp)), threshold_abs=threshold, exclude_border=False
    )
    return pd.DataFrame(
        {"row": peaks[:, 0], "col": peaks[:, 1], "haematoxylin": density[peaks[:, 0], peaks[:, 1]]}
    )


def outlined(x: np.ndarray, y: np.ndarray, polygons: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """Whether each point (level-0 px) lies inside one of ``polygons`` (WKB, level-0 px),
    or within ``tolerance`` px of one."""
    if not len(x):
        return np.zeros(0, bool)
    if not len(polygons):
        return np.zeros(len(x), bool)
    shapes = shapely.from_wkb(np.asarray(polygons))
    points = shapely.points(np.asarray(x, float), np.asarray(y, float))
    tree = shapely.STRtree(shapes)
    hits = (
        tree.query(points, predicate="dwithin", distance=tolerance)
        if tolerance > 0
        else tree.query(points, predicate="within")
    )
    inside = np.zeros(len(x), bool)
    inside[hits[0]] = True
    return inside
