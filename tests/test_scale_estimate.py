"""The µm/px estimate for slides that say nothing about their scale."""

from __future__ import annotations

import numpy as np
import pytest

from histocluster.segmentation.scale_estimate import (
    MIN_MARGIN,
    ScaleEstimate,
    estimate_mpp,
    sure_pixels,
    tissue_windows,
)


def peaked_at(true_mpp: float, peak: float = 0.4, elsewhere: float = 0.1):
    """A fake probability map maker: at ``true_mpp`` ``peak`` of the nuclear pixels are
    sure, elsewhere ``elsewhere``."""

    def probability(rgb: np.ndarray, mpp: float) -> np.ndarray:
        share = peak if mpp == true_mpp else elsewhere
        p = np.zeros(rgb.shape[:2], dtype=np.float32)
        nuclear = p.reshape(-1)[:1000]
        nuclear[:] = 0.6
        nuclear[: int(1000 * share)] = 0.95
        return p

    return probability


REGIONS = [np.zeros((64, 64, 3), dtype=np.uint8)] * 3


def test_sure_pixels_counts_nuclear_and_sure_pixels():
    p = np.array([[0.2, 0.5, 0.89], [0.9, 0.99, 0.49]])
    assert sure_pixels(p) == (2, 4)


@pytest.mark.parametrize("true_mpp", [0.25, 0.5, 1.0])
def test_the_candidate_where_the_network_is_surest_wins(true_mpp):
    estimate = estimate_mpp(REGIONS, peaked_at(true_mpp))
    assert estimate.mpp == true_mpp
    assert estimate.sure_share[true_mpp] == pytest.approx(0.4)
    assert f"chose {true_mpp:g} µm/px" in estimate.evidence()


def test_no_estimate_without_a_clear_winner_or_without_sure_nuclei():
    close = estimate_mpp(REGIONS, peaked_at(0.5, peak=0.1 * MIN_MARGIN * 0.95))
    assert close.mpp is None and "no clear winner" in close.evidence()
    assert estimate_mpp(REGIONS, peaked_at(0.5, peak=0.02, elsewhere=0.0)).mpp is None  # under the floor
    assert estimate_mpp([], peaked_at(0.5)).mpp is None  # no tissue region at all


def test_tissue_windows_are_the_fullest_non_overlapping_squares():
    tissue = np.zeros((40, 40), dtype=bool)
    tissue[0:10, 10:20] = True  # full window
    tissue[20:26, 30:40] = True  # 60 % window
    tissue[30:34, 0:10] = True  # 40 %: not enough
    assert tissue_windows(tissue, 10, 5) == [(0, 10), (20, 30)]
    assert tissue_windows(tissue, 10, 1) == [(0, 10)]


def test_evidence_names_every_candidate():
    text = ScaleEstimate(1.0, {0.25: 0.0, 0.5: 0.005, 1.0: 0.036}).evidence()
    assert "0.000 at 0.25, 0.005 at 0.5, 0.036 at 1 µm/px; chose 1 µm/px" in text


@pytest.mark.slow
def test_the_tcga_slide_is_estimated_at_1_um_per_px(tcga_slide):
    """The shared TCGA slide has no µm/px and no objective power; its outlines are right
    at 1 µm/px (README). Six tissue regions, the shipped network."""
    from histocluster.pipelines.tiling.nodes import _estimate_scale, _thumbnail_downsample
    from histocluster.wsi.settings import TilingParams
    from histocluster.wsi.slides import open_slide

    params = TilingParams()
    with open_slide(tcga_slide) as reader:
        row = {"width": reader.dimensions[0], "height": reader.dimensions[1], "mpp_x": 0.5, "mpp_y": 0.5}
        row["mpp_source"] = "parameter"
        _estimate_scale(row, reader, reader.thumbnail(_thumbnail_downsample(row, params)), params)
    assert row["mpp_source"] == "estimated" and row["mpp_x"] == row["mpp_y"] == 1.0, row
    assert row["mpp_evidence"].startswith("6 tissue regions: share of sure nucleus pixels")
