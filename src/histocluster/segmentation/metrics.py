"""Instance-segmentation metrics: object F1 at an IoU threshold, AJI, PQ and mean AP.

All functions take two integer label maps of the same shape (0 = background, each
other value one object) and compare the objects.

* **Matching** at threshold ``t``: a ground-truth and a predicted object match when
  their IoU ≥ ``t``; pairs are taken in order of decreasing IoU, each object at most
  once (for ``t`` > 0.5 the match is unique anyway).
* **Object precision / recall / F1** at IoU ≥ 0.5: ``TP / (TP + FP)``,
  ``TP / (TP + FN)``, ``2 TP / (2 TP + FP + FN)``.
* **PQ** (Kirillov et al. 2019) = DQ × SQ with DQ = F1 at IoU > 0.5 and SQ the mean IoU
  of the matched pairs.
* **AJI** (Kumar et al. 2017): each ground-truth object is paired with the predicted
  object of highest IoU with it (0 when it overlaps none); AJI = Σ|G ∩ S| / (Σ|G ∪ S| +
  Σ area of predicted objects never paired).
* **AP at t** (as in Cellpose / StarDist): ``TP / (TP + FP + FN)``; **mAP** is its mean
  over ``t`` = 0.50, 0.55, …, 0.95.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


@dataclass(frozen=True)
class Overlaps:
    """Pairwise overlaps of the objects of two label maps."""

    intersection: np.ndarray  # (n_true, n_pred) pixel counts
    true_area: np.ndarray  # (n_true,)
    pred_area: np.ndarray  # (n_pred,)

    @property
    def iou(self) -> np.ndarray:
        union = self.true_area[:, None] + self.pred_area[None, :] - self.intersection
        return np.divide(self.intersection, union, out=np.zeros_like(union, dtype=float), where=union > 0)


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    values, inverse = np.unique(labels, return_inverse=True)
    if values[0] != 0:  # no background pixel: keep 0 free for background
        inverse = inverse + 1
        return inverse.reshape(labels.shape), len(values)
    return inverse.reshape(labels.shape), len(values) - 1


def overlaps(true: np.ndarray, pred: np.ndarray) -> Overlaps:
    """Intersections and areas of every (true, predicted) object pair."""
    if true.shape != pred.shape:
        raise ValueError(f"label maps differ in shape: {true.shape} vs {pred.shape}")
    t, n_true = _relabel(np.asarray(true))
    p, n_pred = _relabel(np.asarray(pred))
    joint = np.bincount(
        t.ravel().astype(np.int64) * (n_pred + 1) + p.ravel(), minlength=(n_true + 1) * (n_pred + 1)
    ).reshape(n_true + 1, n_pred + 1)
    return Overlaps(
        intersection=joint[1:, 1:].astype(float),
        true_area=joint[1:, :].sum(axis=1).astype(float),
        pred_area=joint[:, 1:].sum(axis=0).astype(float),
    )


def match(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches with IoU ≥ ``threshold``, greedily by decreasing IoU."""
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_rows, used_cols, pairs = set(), set(), []
    for i in order:
        r, c = int(rows[i]), int(cols[i])
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    if not pairs:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    matched = np.array(pairs)
    return matched[:, 0], matched[:, 1]


def aji(ov: Overlaps) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017)."""
    if len(ov.true_area) == 0:
        return 1.0 if len(ov.pred_area) == 0 else 0.0
    if len(ov.pred_area) == 0:
        return 0.0
    iou = ov.iou
    best = iou.argmax(axis=1)
    has_overlap = ov.intersection[np.arange(len(best)), best] > 0
    intersection = ov.intersection[np.arange(len(best)), best] * has_overlap
    union = np.where(has_overlap, ov.true_area + ov.pred_area[best] - intersection, ov.true_area)
    used = np.zeros(len(ov.pred_area), dtype=bool)
    used[best[has_overlap]] = True
    return float(intersection.sum() / (union.sum() + ov.pred_area[~used].sum()))


@dataclass(frozen=True)
class InstanceScores:
    """Scores of one comparison (one image, or pooled)."""

    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    sq: float
    pq: float
    aji: float
    map: float

    def as_dict(self) -> dict:
        return asdict(self)


def _ratio(a: float, b: float, empty: float = 1.0) -> float:
    return float(a / b) if b else empty


def score(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> InstanceScores:
    """Every metric of this module for one pair of label maps."""
    ov = overlaps(true, pred)
    iou = ov.iou
    n_true, n_pred = len(ov.true_area), len(ov.pred_area)
    rows, cols = match(iou, threshold)
    tp = len(rows)
    fp, fn = n_pred - tp, n_true - tp
    # PQ uses IoU > 0.5 strictly (unique matches); identical to ≥ except at exactly 0.5.
    pq_rows, pq_cols = match(np.where(iou > 0.5, iou, 0.0), 1e-12)
    pq_tp = len(pq_rows)
    sq = float(iou[pq_rows, pq_cols].mean()) if pq_tp else 0.0
    dq = _ratio(2 * pq_tp, 2 * pq_tp + (n_pred - pq_tp) + (n_true - pq_tp))
    aps = []
    for t in IOU_THRESHOLDS:
        t_tp = len(match(iou, t)[0])
        aps.append(_ratio(t_tp, t_tp + (n_pred - t_tp) + (n_true - t_tp)))
    return InstanceScores(
        n_true=n_true,
        n_pred=n_pred,
        tp=tp,
        fp=fp,
        fn=fn,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        sq=sq,
        pq=dq * sq,
        aji=aji(ov),
        map=float(np.mean(aps)),
    )
