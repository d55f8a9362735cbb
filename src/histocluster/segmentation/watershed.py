"""H&E nuclei segmentation by marker-controlled watershed, on the CPU.

Every size is a physical size (µm or µm²) converted with the image's µm/px, so the
same settings hold at 0.25 and 0.5 µm/px. Two ways to find the foreground and the
markers, chosen by ``foreground``:

``network`` (default): a small U-Net (:mod:`.nuclei_net`, shipped weights trained on
five bench sets) gives each pixel a probability of background, nucleus interior and nucleus
boundary. Foreground: interior + boundary above ``foreground_probability``, holes up to
``max_hole_um2`` filled. Landscape: the foreground's smoothed distance transform times
(½ + the interior probability smoothed over ``interior_smoothing_um``), so the ridge
between touching nuclei, which the network calls boundary, sinks. Markers and watershed
as in steps 3–4 below, on that landscape. Then nuclei whose mean nucleus probability is
under ``min_object_probability`` are dropped (keratin, keratohyalin, collagen).

``threshold`` (classical, no learned part):
1. Haematoxylin optical density by colour deconvolution (Ruifrok & Johnston; the
   scikit-image H&E-DAB matrix), smoothed with a Gaussian of ``smoothing_um``.
2. Foreground: haematoxylin above Otsu's threshold of the image (times
   ``threshold_scale``), never below ``min_threshold``; holes up to ``max_hole_um2``
   filled, objects under ``min_area_um2`` dropped.
3. Markers: maxima of the smoothed distance transform at least ``min_distance_um`` apart
   and ``marker_h_um`` above their surroundings — one per nucleus in a clump.
4. Watershed of the inverted distance map (plus ``intensity_weight`` × darkness, so cuts
   follow pale gaps) from those markers inside the foreground.

Either way, nuclei under ``min_area_um2`` or over ``max_area_um2`` are dropped.

Distance transforms, Gaussian smoothing and the maximum/minimum filters of the markers are
OpenCV's (the same values as scipy.ndimage's with its default ``reflect`` border, 5–20×
faster on one core); see docs/benchmarks.md, *Where the segmentation pass spends its time*.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from histocluster.segmentation.network_runtime import (
    NucleiNetwork,
    load_nuclei_network,
    predict_probabilities,
    resize_probabilities,
)
from histocluster.segmentation.settings import WatershedSettings
from histocluster.wsi.stain import haematoxylin


def gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(image, sigma)`` (truncated at 4 σ, mirrored border)
    as float32, by OpenCV."""
    radius = int(4 * sigma + 0.5)
    size = 2 * radius + 1
    return cv2.GaussianBlur(
        np.asarray(image, dtype=np.float32), (size, size), sigma, borderType=cv2.BORDER_REFLECT
    )


def label(mask: np.ndarray, connectivity: int = 4) -> tuple[np.ndarray, int]:
    """``scipy.ndimage.label(mask)`` (``connectivity`` 4, its default, or 8) by OpenCV:
    int32 labels numbered in raster order of each component's first pixel, and their
    count — the same array as scipy's, 1.5–3× faster."""
    count, labels = cv2.connectedComponentsWithAlgorithm(
        np.ascontiguousarray(mask, dtype=np.uint8), connectivity, cv2.CV_32S, cv2.CCL_SAUF
    )
    return labels, count - 1


def foreground(h: np.ndarray, mpp: float, s: WatershedSettings) -> np.ndarray:
    """Nuclear foreground mask from a (smoothed) haematoxylin image."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    threshold = max(
        float(threshold_otsu(h)) * s.threshold_scale if h.max() > h.min() else np.inf, s.min_threshold
    )
    mask = h > threshold
    area = mpp * mpp
    mask = ndi.binary_opening(mask, iterations=1)
    labels, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= s.min_area_um2 / area
    keep[0] = False
    return fill_small_holes(keep[labels], s.max_hole_um2 / area)


def fill_small_holes(mask: np.ndarray, max_pixels: float) -> np.ndarray:
    """``mask`` with its holes of at most ``max_pixels`` filled.

    A hole is a 4-connected piece of background that does not touch the image border (as
    in :func:`scipy.ndimage.binary_fill_holes`); one labelling of the background finds
    them all, with their sizes."""
    background, _ = label(~mask)
    small = np.bincount(background.ravel()) <= max_pixels
    small[0] = False
    edges = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    small[edges] = False
    if not small.any():
        return mask
    return mask | small[background]


def markers(distance: np.ndarray, mask: np.ndarray, mpp: float, s: WatershedSettings) -> np.ndarray:
    """Labelled markers: local maxima of ``distance`` at least ``min_distance_um`` apart
    and ``marker_h_um`` higher than the saddle around them (dilation-based h-test)."""
    size = max(3, int(round(2 * s.min_distance_um / mpp)) | 1)
    square = np.ones((size, size), np.uint8)
    distance = np.asarray(distance, dtype=np.float32)
    # OpenCV ignores pixels outside the image, which for a maximum or minimum over a
    # window is what scipy's mirrored border gives too.
    peaks = (distance == cv2.dilate(distance, square)) & mask
    if s.marker_h_um > 0:
        h = s.marker_h_um / mpp
        low = cv2.erode(distance, square)
        peaks &= distance - low >= h
    return label(peaks, connectivity=8)[0]


@lru_cache(maxsize=4)
def cached_network(weights_path: str | None, runtime: str = "auto", precision: str = "auto") -> NucleiNetwork:
    """The nuclei network for the settings (:func:`~.network_runtime.load_nuclei_network`),
    loaded once per process."""
    return load_nuclei_network(weights_path, runtime, precision)


def drop_by_area(labels: np.ndarray, mpp: float, min_um2: float, max_um2: float) -> np.ndarray:
    """``labels`` with objects under ``min_um2`` or over ``max_um2`` set to background (in place)."""
    sizes = np.bincount(labels.ravel())
    area = mpp * mpp
    return clear_objects(labels, (sizes < min_um2 / area) | (sizes > max_um2 / area))


def clear_objects(labels: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """``labels`` with every object ``k`` where ``drop[k]`` set to background (in place;
    ``drop`` is indexed by label, its entry 0 is ignored)."""
    drop[0] = False
    if drop.any():
        labels[drop[labels]] = 0
    return labels


def seed_orphans(seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``seeds`` plus one seed for each connected component of ``mask`` that has none."""
    components, n = label(mask)
    has_seed = np.zeros(n + 1, dtype=bool)
    has_seed[components[seeds > 0]] = True
    has_seed[0] = True  # outside the mask
    if has_seed.all():
        return seeds
    orphan = ~has_seed[components]
    return np.where(orphan, components + seeds.max(), seeds)


def network_labels(probabilities: np.ndarray, mpp: float, s: WatershedSettings) -> np.ndarray:
    """Nuclei from the network's (background, interior, boundary) probabilities at ``mpp``."""
    from skimage.segmentation import watershed

    mask = probabilities[1] + probabilities[2] > s.foreground_probability
    mask = fill_small_holes(mask, s.max_hole_um2 / (mpp * mpp))
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    interior = probabilities[1]
    if s.interior_smoothing_um > 0:
        interior = gaussian(interior, s.interior_smoothing_um / mpp)
    landscape = distance_landscape(mask, mpp) * (0.5 + interior)
    seeds = seed_orphans(markers(landscape, mask, mpp, s), mask)
    labels = watershed(-landscape, seeds, mask=mask).astype(np.int32)
    labels = drop_by_area(labels, mpp, s.min_area_um2, s.max_area_um2)
    if s.min_object_probability > 0:
        labels = drop_unsure(labels, probabilities[1] + probabilities[2], s.min_object_probability)
    return labels


def drop_unsure(labels: np.ndarray, probability: np.ndarray, min_mean: float) -> np.ndarray:
    """``labels`` with objects whose mean ``probability`` is under ``min_mean`` set to
    background (in place).

    A nucleus is confidently nuclear in its middle and less so at its rim; keratin,
    keratohyalin and collagen that the network half-believes are nuclear come out as broad
    regions at middling probability, which the watershed cuts into plausible-sized pieces.
    The mean over each piece tells them apart (see docs/segmentation.md, *object filter*)."""
    total = np.bincount(labels.ravel(), weights=probability.ravel())
    count = np.bincount(labels.ravel())
    return clear_objects(labels, total < min_mean * count)  # absent labels: 0 < 0 is False


def distance_to_background(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance (px, float32) of each pixel of ``mask`` to the nearest
    pixel outside it, 0 outside; with no background in the image, to the nearest pixel
    beyond the image border."""
    if mask.all():
        padded = np.pad(mask.astype(np.uint8), 1)
        return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def distance_landscape(mask: np.ndarray, mpp: float) -> np.ndarray:
    """Distance to the background (px), smoothed over 0.5 µm (at least one pixel)."""
    return gaussian(distance_to_background(mask), max(1.0, 0.5 / mpp))


def segment_with_network(rgb: np.ndarray, mpp: float, s: WatershedSettings) -> np.ndarray:
    """:func:`network_labels` of the network's probabilities, brought to the image's size."""
    return segment_with_network_scored(rgb, mpp, s)[0]


def segment_with_network_scored(
    rgb: np.ndarray, mpp: float, s: WatershedSettings
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`segment_with_network` and the nucleus probability (interior + boundary) of
    every pixel."""
    network = cached_network(s.weights_path, s.runtime, s.precision)
    probabilities = resize_probabilities(predict_probabilities(network, rgb, mpp), rgb.shape[:2])
    return network_labels(probabilities, mpp, s), probabilities[1] + probabilities[2]


def segment_nuclei(rgb: np.ndarray, mpp: float, settings: WatershedSettings | None = None) -> np.ndarray:
    """Instance label map (int32, 0 = background) of the nuclei in an H&E RGB image."""
    s = settings or WatershedSettings()
    if s.foreground == "network":
        return segment_with_network(rgb, mpp, s)
    return segment_with_threshold(rgb, mpp, s)


def segment_with_threshold(rgb: np.ndarray, mpp: float, s: WatershedSettings) -> np.ndarray:
    """The classical path: Otsu foreground, distance-transform markers, watershed."""
    from skimage.segmentation import watershed

    h = haematoxylin(rgb)
    sigma = s.smoothing_um / mpp
    if sigma > 0:
        h = gaussian(h, sigma)
    mask = foreground(h, mpp, s)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    smooth_distance = distance_landscape(mask, mpp)
    # Components without a marker (small, flat) get one of their own.
    seeds = seed_orphans(markers(smooth_distance, mask, mpp, s), mask)
    landscape = -smooth_distance
    if s.intensity_weight > 0:
        landscape = landscape - s.intensity_weight * (h / max(float(h.max()), 1e-6)) * (
            s.min_distance_um / mpp
        )
    labels = watershed(landscape, seeds, mask=mask).astype(np.int32)
    return drop_by_area(labels, mpp, s.min_area_um2, s.max_area_um2)


class WatershedSegmenter:
    """:func:`segment_nuclei` behind the batch interface shared with Cellpose."""

    name = "watershed"

    def __init__(self, settings: WatershedSettings) -> None:
        self.settings = settings
        if settings.foreground == "network":  # loaded now: a bad file fails before any tile
            cached_network(settings.weights_path, settings.runtime, settings.precision)

    def segment(self, images: list[np.ndarray], mpp: float) -> list[np.ndarray]:
        return [segment_nuclei(image, mpp, self.settings) for image in images]

    def segment_scored(
        self, images: list[np.ndarray], mpp: float
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Label maps with the network's nucleus probability (no score for the threshold
        foreground)."""
        if self.settings.foreground == "network":
            return [segment_with_network_scored(image, mpp, self.settings) for image in images]
        return [(segment_with_threshold(image, mpp, self.settings), None) for image in images]
