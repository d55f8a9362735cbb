"""Per-tile quality metrics and the keep/reject decision.

The metrics are those of the upstream pipeline, computed on the tile at its tiling
resolution, plus a pixel-level tissue fraction:

=================  =========================================================  ==========
metric             meaning                                                    default
=================  =========================================================  ==========
edge_density       fraction of Canny edge pixels (structure present)          ≥ 0.02
bright_ratio       fraction of grey levels above ``bright_level`` (glass)      ≤ 0.8
dark_ratio         fraction of grey levels below ``dark_level`` (ink, folds)   ≤ 0.8
intensity_std      standard deviation of grey levels (contrast)               ≥ 10
laplacian_var      variance of the Laplacian of grey levels (sharpness)       ≥ 50
color_variance     mean over pixels of the std across R, G, B (stain present) ≥ 5
tissue_fraction    fraction of pixels that are tissue (saturation or OD)      ≥ 0.1
=================  =========================================================  ==========
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import cv2
import numpy as np

from histocluster.wsi.settings import QualityThresholds, TissueSettings
from histocluster.wsi.tissue import optical_density, saturation

METRICS = (
    "edge_density",
    "bright_ratio",
    "dark_ratio",
    "intensity_std",
    "laplacian_var",
    "color_variance",
    "tissue_fraction",
)


def tile_metrics(rgb: np.ndarray, thresholds: QualityThresholds, tissue: TissueSettings) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one RGB uint8 tile."""
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 tile, got {rgb.dtype} {rgb.shape}")
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(gray, thresholds.canny_low, thresholds.canny_high)
    tissue_pixels = (saturation(rgb) > tissue.min_saturation) | (
        optical_density(rgb) > tissue.min_optical_density
    )
    return {
        "edge_density": float(np.count_nonzero(edges)) / edges.size,
        "bright_ratio": float(np.mean(gray > thresholds.bright_level)),
        "dark_ratio": float(np.mean(gray < thresholds.dark_level)),
        "intensity_std": float(gray.std()),
        "laplacian_var": float(cv2.Laplacian(gray, cv2.CV_64F).var()),
        "color_variance": float(_channel_std(rgb).mean()),
        "tissue_fraction": float(tissue_pixels.mean()),
    }


def _channel_std(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel standard deviation across R, G and B (0 for any grey)."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    mean = (r + g + b) / 3.0
    return np.sqrt(((r - mean) ** 2 + (g - mean) ** 2 + (b - mean) ** 2) / 3.0)


def judge(metrics: dict[str, float], thresholds: QualityThresholds) -> tuple[bool, str]:
    """Keep flag and reason: every failed check, e.g. ``'laplacian_var 12.3 < 50'``."""
    checks = (
        ("edge_density", ">=", thresholds.min_edge_density),
        ("bright_ratio", "<=", thresholds.max_bright_ratio),
        ("dark_ratio", "<=", thresholds.max_dark_ratio),
        ("intensity_std", ">=", thresholds.min_intensity_std),
        ("laplacian_var", ">=", thresholds.min_laplacian_var),
        ("color_variance", ">=", thresholds.min_color_variance),
        ("tissue_fraction", ">=", thresholds.min_tissue_fraction),
    )
    failures = []
    for name, op, limit in checks:
        value = metrics[name]
        ok = value >= limit if op == ">=" else value <= limit
        if not ok:
            failures.append(f"{name} {value:.3g} {'<' if op == '>=' else '>'} {limit:g}")
    return (not failures, "; ".join(failures))


def most_common_failures(reasons: Iterable[str], top: int = 3) -> str:
    """``'color_variance 4, bright_ratio 1'``: the first failed check of each rejected
    tile's reason (:func:`judge`), counted, the ``top`` most frequent first."""
    first = Counter(str(reason).split(";")[0].split(" ")[0] for reason in reasons)
    return ", ".join(f"{name} {count}" for name, count in first.most_common(top))
