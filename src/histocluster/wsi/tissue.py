"""Tissue detection on a low-resolution thumbnail.

Tissue is where a pixel is coloured (HSV saturation) or absorbs light (optical
density) clearly more than the glass around it. Each threshold is Otsu's on the
thumbnail, but never below a floor, so a slide of bare glass gives no tissue instead of
splitting its noise in two, and never above a ceiling, so marking ink or a region that is
all tissue does not lift it over the tissue itself. Morphological clean-up sizes are in µm, so the same
parameters hold at any thumbnail resolution.
"""

from __future__ import annotations

import cv2
import numpy as np

from histocluster.wsi.settings import TissueSettings
from histocluster.wsi.stain import OD_LUT


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation, (max - min) / max, in [0, 1] of an RGB uint8 image."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2HSV)
    return hsv[..., 1].astype(np.float32) / 255.0


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Mean optical density over the three channels (0 for white glass)."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    return (OD_LUT[rgb[..., 0]] + OD_LUT[rgb[..., 1]] + OD_LUT[rgb[..., 2]]) / 3.0


def _threshold(values: np.ndarray, floor: float, ceiling: float = float("inf")) -> float:
    """Otsu's threshold of ``values``, kept within [``floor``, ``ceiling``]."""
    from skimage.filters import threshold_otsu

    if values.size == 0 or float(values.max()) == float(values.min()):
        return floor
    return max(min(float(threshold_otsu(values)), ceiling), floor)


def tissue_pixels(rgb: np.ndarray, settings: TissueSettings) -> np.ndarray:
    """Pixel-wise tissue decision, before any clean-up. Otsu's thresholds split glass from
    tissue when the thumbnail holds both; where it holds a third thing (saturated marking
    ink) or no glass at all (a region that is all tissue) Otsu splits elsewhere, so each
    threshold is kept under a ceiling that pale H&E tissue still exceeds."""
    sat = saturation(rgb)
    od = optical_density(rgb)
    return (sat > _threshold(sat, settings.min_saturation, settings.max_saturation)) | (
        od > _threshold(od, settings.min_optical_density, settings.max_optical_density)
    )


def detect_tissue(rgb: np.ndarray, mpp: float, settings: TissueSettings) -> np.ndarray:
    """Boolean tissue mask of a thumbnail whose pixels are ``mpp`` µm wide.

    Steps: threshold saturation and optical density (Otsu within floors and ceilings),
    close gaps of ``closing_um``, fill holes smaller than ``max_hole_um2`` and drop objects
    smaller than ``min_object_um2`` (or ``min_object_fraction`` of the thumbnail, if less).
    """
    from scipy import ndimage as ndi
    from skimage import morphology

    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an RGB image, got shape {rgb.shape}")
    mask = tissue_pixels(rgb, settings)
    pixel_area = mpp * mpp
    radius = int(round(settings.closing_um / mpp / 2))
    if radius >= 1:  # the image's edge continued outwards, so tissue that reaches it is not eaten
        padded = np.pad(mask, radius, mode="edge")
        mask = ndi.binary_closing(padded, structure=morphology.disk(radius))[radius:-radius, radius:-radius]
    max_hole = int(settings.max_hole_um2 / pixel_area)
    if max_hole >= 1:
        mask = morphology.remove_small_holes(mask, max_size=max_hole)
    # Pieces smaller than min_object_um2 are dropped, or than min_object_fraction of the
    # thumbnail when that is less (on a small exported region 10,000 µm² may be a sixth of it).
    min_object = int(min(settings.min_object_um2 / pixel_area, settings.min_object_fraction * mask.size))
    if min_object >= 1:
        mask = morphology.remove_small_objects(mask, max_size=min_object)
    return mask
