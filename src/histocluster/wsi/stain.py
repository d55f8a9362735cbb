"""Optical density and H&E colour deconvolution (Ruifrok & Johnston 2001)."""

from __future__ import annotations

import numpy as np

#: Optical density of each 8-bit intensity, -log((I + 1) / 256): 0 for white.
OD_LUT = (-np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)

# H&E-DAB stain vectors (rows: haematoxylin, eosin, DAB), as scikit-image's rgb2hed.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Per-channel optical density (h, w, 3) of an RGB uint8 image."""
    return OD_LUT[np.asarray(rgb, dtype=np.uint8)]


def stain_densities(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin, eosin and DAB densities (h, w, 3), float32, clipped at 0."""
    return np.maximum(optical_density(rgb) @ _HED_FROM_RGB, 0)


def haematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin density (h, w) of an RGB uint8 image."""
    return np.maximum(optical_density(rgb) @ _HED_FROM_RGB[:, 0], 0).astype(np.float32)
