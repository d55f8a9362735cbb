"""Label efficiency of cluster-first labelling on CoNSeP (true instance masks).

Every nucleus of every image is measured with the project's own cell measurements
(shape, haematoxylin/eosin density) plus the haematoxylin/eosin density of a thin ring
around it; features are standardised. Then, for each budget of *decisions*:

* **clusters (oracle)**: KMeans with k = budget clusters; an oracle looks at the ``r``
  cells nearest each centre and names the cluster once with their majority true type;
  every cell takes its cluster's name.
* **random + kNN / + LR**: the same number of decisions spent on random single cells, whose
  true types are propagated by 5-nearest-neighbours or logistic regression.
* **supervised (ceiling)**: logistic regression and gradient boosting trained on all
  cells of the other images (5-fold cross-validation split by image).

Reported over all cells: accuracy and macro-F1 (mean of 3 seeds), and per-class recall at
the budget of one decision per 100 cells. This is the baseline issue 4 must beat: no
texture, no context, no graph clustering yet.

Usage:
    python bench/bench_label_efficiency.py ../shared/data/bench/consep [--budgets 50,100,180,400]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage as ndi
from sklearn.cluster import KMeans
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from histocluster.cell_measurements import SHAPE_COLUMNS, STAIN_COLUMNS, measure_objects
from histocluster.stain import stain_densities

SHAPE = SHAPE_COLUMNS
STAIN = STAIN_COLUMNS
RING = ["ring_hematoxylin", "ring_eosin"]


def ring_stains(labels: np.ndarray, rgb: np.ndarray, ring_px: int) -> pd.DataFrame:
    """Mean H and E density in a ring of ``ring_px`` around each object (other objects excluded)."""
    grown = ndi.grey_dilation(labels, size=2 * ring_px + 1)
    ring = np.where(labels == 0, grown, 0)
    stains = stain_densities(rgb)
    n = int(labels.max()) + 1
    count = np.maximum(np.bincount(ring.ravel(), minlength=n), 1)
    h = np.bincount(ring.ravel(), weights=stains[..., 0].ravel(), minlength=n) / count
    e = np.bincount(ring.ravel(), weights=stains[..., 1].ravel(), minlength=n) / count
    return pd.DataFrame({"label": np.arange(n), "ring_hematoxylin": h, "ring_eosin": e})


def load_cells(bench: Path) -> pd.DataFrame:
    mpp = float(json.loads((bench / "info.json").read_text())["mpp"])
    types = pd.read_csv(bench / "cells.csv")
    frames = []
    for image_id, truth in types.groupby("image_id"):
        image = next((bench / "images").glob(f"{image_id}.*"))
        rgb = np.asarray(Image.open(image).convert("RGB"))
        labels = np.asarray(Image.open(bench / "instances" / f"{image_id}.png")).astype(np.int32)
        tile = {
            "slide_id": image_id,
            "tile_id": image_id,
            "x": 0,
            "y": 0,
            "w": rgb.shape[1],
            "h": rgb.shape[0],
            "out_w": rgb.shape[1],
            "out_h": rgb.shape[0],
            "out_mpp_x": mpp,
            "out_mpp_y": mpp,
        }
        cells = measure_objects(labels, rgb, tile, "truth")
        cells = cells.merge(ring_stains(labels, rgb, max(1, round(2.0 / mpp))), on="label")
        cells = cells.merge(
            truth.rename(columns={"instance_id": "label"})[["label", "cell_type"]], on="label", how="inner"
        )
        frames.append(cells.assign(image_id=image_id))
    return pd.concat(frames, ignore_index=True)


def context_features(cells: pd.DataFrame, x: np.ndarray, k: int) -> np.ndarray:
    """Per cell: mean standardised features of its ``k`` nearest neighbours in the same
    image, and the (log) distance to the k-th neighbour (local density)."""
    from sklearn.neighbors import NearestNeighbors

    out = np.zeros((len(cells), x.shape[1] + 1))
    for _, index in cells.groupby("image_id").indices.items():
        points = cells.iloc[index][["centroid_x", "centroid_y"]].to_numpy()
        kk = min(k + 1, len(index))
        distance, neighbours = NearestNeighbors(n_neighbors=kk).fit(points).kneighbors(points)
        if kk > 1:
            out[index, :-1] = x[index][neighbours[:, 1:]].mean(axis=1)
            out[index, -1] = np.log1p(distance[:, -1])
    return StandardScaler().fit_transform(out)


def scores(y_true, y_pred) -> dict:
    return {"accuracy": accuracy_score(y_true, y_pred), "macro_f1": f1_score(y_true, y_pred, average="macro")}


def cluster_oracle(x, y, k, r, seed):
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x)
    pred = np.empty(len(y), dtype=object)
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        near = members[np.argsort(((x[members] - km.cluster_centers_[c]) ** 2).sum(1))[:r]]
        pred[members] = pd.Series(y[near]).mode().iloc[0]
    return pred


def random_then(model, x, y, k, seed):
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(y), size=k, replace=False)
    if len(set(y[chosen])) < 2:
        return np.full(len(y), y[chosen][0], dtype=object)
    return model().fit(x[chosen], y[chosen]).predict(x)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path)
    parser.add_argument("--budgets", default="50,100,180,400", help="decisions (comma separated)")
    parser.add_argument("--representatives", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--context", type=int, default=0, help="add the mean features of the k nearest neighbours"
    )
    args = parser.parse_args()

    cells = load_cells(args.bench)
    features = SHAPE + STAIN + RING
    x = StandardScaler().fit_transform(cells[features].to_numpy())
    if args.context:
        x = np.hstack([x, context_features(cells, x, args.context)])
        features = features + [f"neighbours_{f}" for f in SHAPE + STAIN + RING] + ["neighbour_distance"]
    y = cells["cell_type"].to_numpy().astype(object)
    n = len(y)
    print(
        f"{n} nuclei in {cells['image_id'].nunique()} images; {len(features)} features; classes: "
        + ", ".join(f"{c} {v}" for c, v in cells["cell_type"].value_counts().items())
    )
    methods = {
        f"clusters (oracle, r={args.representatives})": lambda k, s: cluster_oracle(
            x, y, k, args.representatives, s
        ),
        "random + 5-NN": lambda k, s: random_then(lambda: KNeighborsClassifier(5), x, y, k, s),
        "random + LR": lambda k, s: random_then(lambda: LogisticRegression(max_iter=2000), x, y, k, s),
    }
    print(f"\n{'decisions':>9} {'per cell':>9}  {'method':28s} {'accuracy':>9} {'macro-F1':>9}")
    recall_at = {}
    for k in (int(b) for b in args.budgets.split(",")):
        for name, method in methods.items():
            runs = [method(k, seed) for seed in range(args.seeds)]
            mean = {m: np.mean([scores(y, p)[m] for p in runs]) for m in ("accuracy", "macro_f1")}
            print(f"{k:9d} {k / n:9.4f}  {name:28s} {mean['accuracy']:9.3f} {mean['macro_f1']:9.3f}")
            if k == min((int(b) for b in args.budgets.split(",")), key=lambda b: abs(b - n / 100)):
                labels = sorted(set(y))
                recall_at[name] = dict(
                    zip(labels, recall_score(y, runs[0], labels=labels, average=None), strict=True)
                )
    groups = cells["image_id"].to_numpy()
    for name, model in (
        ("supervised LR (ceiling)", LogisticRegression(max_iter=2000)),
        ("supervised GBDT (ceiling)", HistGradientBoostingClassifier()),
    ):
        pred = cross_val_predict(model, x, y, groups=groups, cv=GroupKFold(5))
        s = scores(y, pred)
        print(f"{'all':>9} {'CV':>9}  {name:28s} {s['accuracy']:9.3f} {s['macro_f1']:9.3f}")
        labels = sorted(set(y))
        recall_at[name] = dict(zip(labels, recall_score(y, pred, labels=labels, average=None), strict=True))
    print("\nper-class recall (budget nearest 1 decision / 100 cells; ceilings: all labels)")
    labels = sorted(set(y))
    print(f"  {'method':28s} " + " ".join(f"{c:>12s}" for c in labels))
    for name, recalls in recall_at.items():
        print(f"  {name:28s} " + " ".join(f"{recalls[c]:12.3f}" for c in labels))


if __name__ == "__main__":
    main()
