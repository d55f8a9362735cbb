"""Classical H&E nuclei segmentation: colour deconvolution, threshold, watershed.

Every size is a physical size (µm or µm²) converted with the image's µm/px, so the
same settings hold at 0.25 and 0.5 µm/px.

Steps:
1. Haematoxylin optical density by colour deconvolution (Ruifrok & Johnston; the
   scikit-image H&E-DAB matrix), smoothed with a Gaussian of ``smoothing_um``.
2. Foreground: haematoxylin above Otsu's threshold of the image (times
   ``threshold_scale``), never below ``min_threshold``; holes up to ``max_hole_um2``
   filled, objects under ``min_area_um2`` dropped.
3. Markers: maxima of the smoothed distance transform at least ``min_distance_um`` apart
   and ``marker_h_um`` above their surroundings — one per nucleus in a clump.
4. Watershed of the inverted distance map (plus ``intensity_weight`` × darkness, so cuts
   follow pale gaps) from those markers inside the foreground.
"""

from __future__ import annotations

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from histocluster.stain import haematoxylin


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class WatershedSettings:
    """Knobs of :func:`segment_nuclei`, physical units."""

    smoothing_um: float = Field(0.5, ge=0)
    threshold_scale: float = Field(1.0, gt=0)
    min_threshold: float = Field(0.05, ge=0)
    min_area_um2: float = Field(12.0, ge=0)
    max_area_um2: float = Field(400.0, gt=0)
    max_hole_um2: float = Field(15.0, ge=0)
    min_distance_um: float = Field(2.0, gt=0)
    marker_h_um: float = Field(0.3, ge=0)
    intensity_weight: float = Field(0.0, ge=0)


def foreground(h: np.ndarray, mpp: float, s: WatershedSettings) -> np.ndarray:
    """Nuclear foreground mask from a (smoothed) haematoxylin image."""
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
    mask = keep[labels]
    holes = ndi.binary_fill_holes(mask) & ~mask
    hole_labels, _ = ndi.label(holes)
    hole_sizes = np.bincount(hole_labels.ravel())
    small = hole_sizes <= s.max_hole_um2 / area
    small[0] = False
    return mask | small[hole_labels]


def markers(distance: np.ndarray, mask: np.ndarray, mpp: float, s: WatershedSettings) -> np.ndarray:
    """Labelled markers: local maxima of ``distance`` at least ``min_distance_um`` apart
    and ``marker_h_um`` higher than the saddle around them (dilation-based h-test)."""
    size = max(3, int(round(2 * s.min_distance_um / mpp)) | 1)
    peaks = (distance == ndi.maximum_filter(distance, size=size)) & mask
    if s.marker_h_um > 0:
        h = s.marker_h_um / mpp
        low = ndi.minimum_filter(distance, size=size)
        peaks &= distance - low >= h
    labels, _ = ndi.label(peaks, structure=np.ones((3, 3)))
    return labels


def segment_nuclei(rgb: np.ndarray, mpp: float, settings: WatershedSettings | None = None) -> np.ndarray:
    """Instance label map (int32, 0 = background) of the nuclei in an H&E RGB image."""
    s = settings or WatershedSettings()
    h = haematoxylin(rgb)
    sigma = s.smoothing_um / mpp
    if sigma > 0:
        h = ndi.gaussian_filter(h, sigma)
    mask = foreground(h, mpp, s)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    distance = ndi.distance_transform_edt(mask).astype(np.float32)
    smooth_distance = ndi.gaussian_filter(distance, max(1.0, 0.5 / mpp))
    seeds = markers(smooth_distance, mask, mpp, s)
    # Components without a marker (small, flat) get one of their own.
    components, n = ndi.label(mask)
    has_seed = np.zeros(n + 1, dtype=bool)
    has_seed[np.unique(components[seeds > 0])] = True
    orphan = ~has_seed[components] & mask
    seeds = np.where(orphan, components + seeds.max(), seeds)
    landscape = -smooth_distance
    if s.intensity_weight > 0:
        landscape = landscape - s.intensity_weight * (h / max(float(h.max()), 1e-6)) * (
            s.min_distance_um / mpp
        )
    labels = watershed(landscape, seeds, mask=mask).astype(np.int32)
    sizes = np.bincount(labels.ravel())
    area = mpp * mpp
    bad = (sizes < s.min_area_um2 / area) | (sizes > s.max_area_um2 / area)
    bad[0] = False
    labels[bad[labels]] = 0
    return labels


class WatershedSegmenter:
    """:func:`segment_nuclei` behind the batch interface shared with Cellpose."""

    name = "watershed"

    def __init__(self, settings: WatershedSettings) -> None:
        self.settings = settings

    def segment(self, images: list[np.ndarray], mpp: float) -> list[np.ndarray]:
        return [segment_nuclei(image, mpp, self.settings) for image in images]
