"""Segmentation metrics on hand-made cases whose answers are worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histocluster.errors import UserInputError
from histocluster.segmentation.evaluation import (
    SUMMARY_METRICS,
    evaluate_points,
    organ,
    point_scores,
    summarise,
)
from histocluster.segmentation.metrics import aji, overlaps, score


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


def test_point_scores_by_hand():
    labels = np.zeros((10, 10), np.int32)
    labels[0:4, 0:4] = 1  # holds two points: a merge
    labels[6:9, 6:9] = 2  # holds one point
    labels[0:3, 7:10] = 3  # holds the clipped point
    labels[5:6, 0:2] = 4  # holds none: unmarked nuclei do not count against it
    # x, y: (1, 1) and (3, 3) in nucleus 1; (7, 7) in 2; (5, 5) background; (12, -3) clips to (9, 0): nucleus 3.
    points = np.array([[1.2, 1.0], [2.6, 2.9], [7.0, 7.4], [5.0, 5.0], [12.0, -3.0]])
    assert point_scores(labels, points) == {"points": 5, "hit": 4, "nuclei_hit": 3, "single": 2}
    assert point_scores(labels, np.empty((0, 2)))["points"] == 0


def test_evaluate_points_on_a_small_points_set(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "info.json").write_text(json.dumps({"mpp": 0.5, "points_only": True}))
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "cells.csv").write_text(
        "image_id,instance_id,x,y,cell_type\na,,1,1,epithelial\na,,2,2,epithelial\na,,8,8,inflammatory\n"
    )

    def two_squares(rgb: np.ndarray, mpp: float) -> np.ndarray:
        assert mpp == 0.5 and rgb.shape == (10, 10, 3)
        labels = np.zeros(rgb.shape[:2], np.int32)
        labels[0:2, 0:2] = 1
        labels[2:4, 2:4] = 2
        return labels

    result = evaluate_points(tmp_path, two_squares)
    assert result["points"] == 3 and result["images"] == 1
    assert result["recall"] == 2 / 3 and result["single"] == 1.0
    assert result["recall_per_type"] == {"epithelial": 1.0, "inflammatory": 0.0}
    (tmp_path / "cells.csv").write_text("image_id,instance_id,x,y,cell_type\nb,,1,1,x\n")
    with pytest.raises(UserInputError, match="image 'b' is not in"):
        evaluate_points(tmp_path, two_squares)


def test_summary_pools_rows_of_several_runs():
    rows = pd.DataFrame(
        {
            "image_id": ["TCGA-21-a", "TCGA-B0-b", "TCGA-B0-c"],
            "megapixels": [1.0, 1.0, 2.0],
            "seconds": [1.0, 0.5, 0.5],
        }
        | {m: [0.3, 0.6, 0.9] for m in SUMMARY_METRICS}
    )
    rows["organ"] = rows["image_id"].map(organ)
    summary = summarise(rows, Path("x"), 0.25)
    assert summary["megapixels_per_second"] == 2.0  # 4 Mpx in 2 s, not the mean of per-image speeds
    assert summary["mean"]["f1"] == pytest.approx(0.6)
    assert summary["per_organ"]["kidney"] == {m: pytest.approx(0.75) for m in SUMMARY_METRICS} | {"images": 2}
