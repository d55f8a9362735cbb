"""The µm/px of a slide that says nothing about it, estimated from its nuclei.

The nuclei network (:mod:`.nuclei_net`) was trained at one physical size (0.5 µm/px, with
scale jitter of about ±20 %). Run on a region resampled as if its pixels were ``c`` µm
wide, it is sure of its nuclei (probability ≥ 0.9 over much of each nucleus) only when
``c`` is near the truth: assumed too coarse, nuclei look blown up and blurred; assumed too
fine, they shrink to specks. So for each candidate scale the share of nucleus pixels
(probability ≥ 0.5) that are *sure* (≥ 0.9) is measured on a few tissue regions, and the
candidate with the highest share wins.

Measured with the shipped weights (``bench/bench_scale_estimate.py``) on 4 images of each
bench set at its known µm/px against half and twice it: the true scale has the highest
share on all six (MoNuSeg, CoNSeP, CPM-15 20× and 40×, glioma, CRC), clearly on four
(1.24–1.38×) and not clearly on CoNSeP (1.05×) and CRC (1.12×), which get no estimate. On
the TCGA sample slide (no metadata) 1 µm/px wins by 3.8× (0.171 against 0.045 at 0.5), the
scale at which its outlines are right; the sample slide's skin, treated as unknown, gives
0.5 µm/px by 1.31×. See docs/guide.md, *Tiling*.

A slide on which the network is sure of almost nothing at every candidate (an overview,
a slide without nuclei), or where the best candidate does not clearly win (share under
:data:`MIN_MARGIN` × the runner-up's), gets no estimate and falls back to the default
µm/px, which the slide checks then flag. The estimate is a fallback for files that say
nothing; the slide table, the log and the report say that it was estimated, with these
shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from histocluster.wsi.settings import TissueSettings
    from histocluster.wsi.slides import SlideReader

#: Scales tried, µm/px: 40×, 20× and 10× scans.
CANDIDATE_MPP = (0.25, 0.5, 1.0)
#: A pixel is nuclear at this nucleus probability, and sure at the second.
NUCLEUS_PROBABILITY, SURE_PROBABILITY = 0.5, 0.9
#: Below this sure share at every candidate, no estimate is made.
MIN_SURE_SHARE = 0.03
#: The winner's share must be this many times the runner-up's, else no estimate is made.
MIN_MARGIN = 1.2


@dataclass(frozen=True)
class ScaleEstimate:
    """The chosen µm/px (None: no candidate convinced) and the evidence per candidate."""

    mpp: float | None
    sure_share: dict[float, float]

    def evidence(self) -> str:
        """One line for the slide table and the log."""
        shares = ", ".join(f"{share:.3f} at {mpp:g}" for mpp, share in self.sure_share.items())
        verdict = f"chose {self.mpp:g} µm/px" if self.mpp else "no clear winner, not used"
        return f"share of sure nucleus pixels {shares} µm/px; {verdict}"


def sure_pixels(nucleus_probability: np.ndarray) -> tuple[int, int]:
    """(sure, nuclear) pixel counts of a nucleus-probability map."""
    nuclear = nucleus_probability >= NUCLEUS_PROBABILITY
    return int((nucleus_probability >= SURE_PROBABILITY).sum()), int(nuclear.sum())


def estimate_mpp(
    regions: Sequence[np.ndarray],
    nucleus_probability,
    candidates: Sequence[float] = CANDIDATE_MPP,
) -> ScaleEstimate:
    """The candidate µm/px under which ``nucleus_probability(rgb, mpp)`` (a (h, w) map of
    each pixel's nucleus probability, e.g. the network's interior + boundary) is surest of
    the nuclei in ``regions`` (RGB uint8 level-0 regions of tissue), pooled over regions."""
    shares = {}
    for mpp in candidates:
        counts = [sure_pixels(nucleus_probability(rgb, mpp)) for rgb in regions]
        sure, nuclear = sum(c[0] for c in counts), sum(c[1] for c in counts)
        shares[float(mpp)] = sure / nuclear if nuclear else 0.0
    (best, first), *rest = sorted(shares.items(), key=lambda item: item[1], reverse=True)
    clear = first >= MIN_SURE_SHARE and (not rest or first >= MIN_MARGIN * rest[0][1])
    return ScaleEstimate(best if clear else None, shares)


def tissue_windows(tissue: np.ndarray, window: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners (row, col), in the pixels of the ``tissue`` mask, of up to ``count``
    non-overlapping ``window``-sized squares with the most tissue (at least half tissue),
    most tissue first."""
    h, w = tissue.shape
    window = max(1, min(window, h, w))
    scores = []
    for row in range(0, h - window + 1, window):
        for col in range(0, w - window + 1, window):
            fraction = float(tissue[row : row + window, col : col + window].mean())
            if fraction >= 0.5:
                scores.append((-fraction, row, col))
    return [(row, col) for _, row, col in sorted(scores)[:count]]


def network_nucleus_probability(
    weights_path: str | None = None, runtime: str = "auto", precision: str = "auto"
):
    """``(rgb, mpp) -> nucleus probability`` at the network's work resolution, with the
    nuclei network of ``weights_path`` (None: the shipped weights) on ``runtime`` in
    ``precision`` (:func:`~.network_runtime.choose_network`)."""
    from histocluster.segmentation.network_runtime import predict_probabilities
    from histocluster.segmentation.watershed import cached_network

    network = cached_network(weights_path, runtime, precision)

    def probability(rgb: np.ndarray, mpp: float) -> np.ndarray:
        p = predict_probabilities(network, rgb, mpp)
        return p[1] + p[2]

    return probability


def estimate_slide_mpp(
    reader: SlideReader,
    thumbnail: np.ndarray,
    tissue: TissueSettings,
    region_px: int = 768,
    regions: int = 6,
    weights_path: str | None = None,
    runtime: str = "auto",
    precision: str = "auto",
) -> tuple[ScaleEstimate, int]:
    """:func:`estimate_mpp` of an open slide on up to ``regions`` level-0 squares of
    ``region_px`` (192 µm wide at 0.25 µm/px, 768 µm at 1) where the thumbnail (any
    downsample) shows most tissue; also the number of regions read."""
    from histocluster.wsi.tissue import tissue_pixels

    width, height = reader.dimensions
    scale_x, scale_y = width / thumbnail.shape[1], height / thumbnail.shape[0]
    corners = tissue_windows(tissue_pixels(thumbnail, tissue), max(1, round(region_px / scale_x)), regions)
    size = (min(region_px, width), min(region_px, height))
    pixels = [reader.read_region((round(c * scale_x), round(r * scale_y)), 0, size) for r, c in corners]
    return estimate_mpp(pixels, network_nucleus_probability(weights_path, runtime, precision)), len(pixels)
