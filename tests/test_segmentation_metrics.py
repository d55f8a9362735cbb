"""Segmentation metrics on hand-made cases whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from histocluster.segmentation_metrics import aji, overlaps, score


def case_a():
    """G1 = 10×10 square, G2 = 10×10 square; P1 covers 80 px of G1, P2 overlaps G2 by
    50 of its 100 px, P3 overlaps nothing (25 px). Label values are arbitrary."""
    true = np.zeros((50, 50), int)
    true[0:10, 0:10] = 7
    true[20:30, 20:30] = 3
    pred = np.zeros((50, 50), int)
    pred[0:10, 0:8] = 11
    pred[20:30, 25:35] = 2
    pred[40:45, 40:45] = 5
    return true, pred


def test_case_a_by_hand():
    s = score(*case_a())
    # IoU(G1,P1) = 80/100 = 0.8; IoU(G2,P2) = 50/150 = 1/3.
    # At IoU ≥ 0.5: TP 1 (G1-P1), FP 2 (P2, P3), FN 1 (G2).
    assert (s.n_true, s.n_pred, s.tp, s.fp, s.fn) == (2, 3, 1, 2, 1)
    assert s.precision == pytest.approx(1 / 3)
    assert s.recall == pytest.approx(1 / 2)
    assert s.f1 == pytest.approx(2 / (2 + 2 + 1))  # 0.4
    # PQ = DQ × SQ = 0.4 × 0.8
    assert s.sq == pytest.approx(0.8) and s.pq == pytest.approx(0.32)
    # AJI: C = 80 + 50, U = 100 + 150, plus unused P3 (25): 130 / 275
    assert s.aji == pytest.approx(130 / 275)
    # AP(t) = TP/(TP+FP+FN): 1/4 for t = 0.50 … 0.80 (7 thresholds), 0 for 0.85 … 0.95
    assert s.map == pytest.approx(7 * 0.25 / 10)


def test_merge_of_two_nuclei_by_hand():
    """One prediction covering two touching 10×10 nuclei: IoU 100/200 = 0.5 with each."""
    true = np.zeros((10, 20), int)
    true[:, :10] = 1
    true[:, 10:] = 2
    pred = np.zeros((10, 20), int)
    pred[:, :] = 9
    s = score(true, pred)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)  # IoU ≥ 0.5 matches one of them only
    assert s.f1 == pytest.approx(2 / 3)
    assert s.pq == 0  # PQ needs IoU > 0.5
    assert s.aji == pytest.approx((100 + 100) / (200 + 200))  # P1 paired with both


def test_perfect_and_empty():
    true, _ = case_a()
    perfect = score(true, true * 5)  # same objects, other label values
    assert (perfect.f1, perfect.pq, perfect.aji, perfect.map) == (1, 1, 1, 1)
    missing = score(true, np.zeros_like(true))
    assert (missing.f1, missing.recall, missing.aji, missing.pq) == (0, 0, 0, 0)
    nothing = score(np.zeros((5, 5), int), np.zeros((5, 5), int))
    assert (nothing.f1, nothing.aji) == (1, 1)


def test_overlap_table_by_hand():
    ov = overlaps(*case_a())
    # Objects are ordered by label value: true 3, 7; pred 2, 5, 11.
    assert ov.true_area.tolist() == [100, 100]
    assert ov.pred_area.tolist() == [100, 25, 80]
    assert ov.intersection.tolist() == [[50, 0, 0], [0, 0, 80]]
    assert aji(ov) == pytest.approx(130 / 275)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        score(np.zeros((3, 3), int), np.zeros((3, 4), int))
