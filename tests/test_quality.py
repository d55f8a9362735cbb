"""Tile quality metrics and the keep/reject decision."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from histocluster.wsi.settings import QualityThresholds, TissueSettings
from histocluster.wsi.slides import open_slide
from histocluster.wsi.tile_quality import judge, tile_metrics

from .conftest import pink_tissue

T = QualityThresholds()
TISSUE = TissueSettings()


def metrics(rgb):
    return tile_metrics(rgb, T, TISSUE)


def test_upstream_default_thresholds():
    assert (
        T.min_edge_density,
        T.max_bright_ratio,
        T.max_dark_ratio,
        T.min_intensity_std,
        T.min_laplacian_var,
        T.min_color_variance,
    ) == (0.02, 0.8, 0.8, 10, 50, 5)


def test_hand_computed_values():
    """Half black, half white: dark and bright ratios 0.5, grey std 127.5, colourless."""
    tile = np.zeros((64, 64, 3), np.uint8)
    tile[:, 32:] = 255
    m = metrics(tile)
    assert m["dark_ratio"] == 0.5 and m["bright_ratio"] == 0.5
    assert m["intensity_std"] == pytest.approx(127.5)
    assert m["color_variance"] == 0
    assert m["edge_density"] == pytest.approx(2 / 64, abs=0.02)  # one vertical edge


def test_blank_glass_is_rejected_for_the_right_reasons():
    keep, reason = judge(metrics(np.full((256, 256, 3), 245, np.uint8)), T)
    assert not keep
    for check in (
        "edge_density",
        "bright_ratio",
        "intensity_std",
        "laplacian_var",
        "color_variance",
        "tissue_fraction",
    ):
        assert check in reason
    assert "dark_ratio" not in reason


def test_ink_is_rejected_as_dark():
    keep, reason = judge(metrics(np.full((256, 256, 3), 10, np.uint8)), T)
    assert not keep and "dark_ratio 1 > 0.8" in reason


def test_blur_is_caught_by_laplacian_variance():
    image, _ = pink_tissue(shape=(256, 256), radius=400)
    sharp = metrics(image)
    blurred = metrics(cv2.GaussianBlur(image, (0, 0), 6))
    assert sharp["laplacian_var"] > T.min_laplacian_var > blurred["laplacian_var"]
    assert judge(sharp, T) == (True, "")
    keep, reason = judge(blurred, T)
    assert not keep and "laplacian_var" in reason


def test_real_tissue_tile_is_kept(cmu_slide):
    with open_slide(cmu_slide) as reader:
        tile = reader.read_region((1000, 1500), 0, (512, 512))  # inside the skin strip
    keep, reason = judge(metrics(tile), T)
    assert keep, reason


def test_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB uint8"):
        metrics(np.zeros((8, 8), np.uint8))
