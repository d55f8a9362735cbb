"""Label efficiency of cluster-first labelling, with the project's own code.

Cells → ``morphology`` embedding (:mod:`histocluster.features.morphology`: cell-table measurements,
texture and ring features, neighbourhood context) → optional reduction
(:mod:`histocluster.clustering.reduction`) → clustering (:mod:`histocluster.clustering.clusterers`) →
representatives (:mod:`histocluster.clustering.summary`). An oracle looks at the ``r``
representatives of each cluster and names it once with their majority true type (one
*decision* per cluster); the name is propagated to every cell of the cluster
(``majority``), or through a logistic regression trained on the named representatives
(``+LR``). Scored over all typed cells: accuracy and macro-F1 against decisions spent.

In the same run, the same number of decisions spent on random single cells, propagated by
5-NN and by logistic regression, and supervised ceilings (all labels, 5-fold
cross-validation split by image).

Bench sets (``../shared/data/README.md`` layout):

* ``consep``: true instance maps: judges features and clustering alone;
* ``crc``: points only: end to end, cells found by the ``watershed`` segmenter, a
  detected cell takes the type of the point inside it (cells without a point are
  clustered but not scored, and the oracle skips them).

Usage:
    python bench/bench_label_efficiency.py ../shared/data/bench/consep
    python bench/bench_label_efficiency.py ../shared/data/bench/crc --budgets 20,40,80
    python bench/bench_label_efficiency.py ../shared/data/bench/consep --methods kmeans --reductions none,umap
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from histocluster.clustering.clusterers import NOISE, cluster_cells, nearest_centre
from histocluster.clustering.reduction import fit_reduce
from histocluster.clustering.settings import (
    ClusteringParams,
    ClusterSettings,
    DBSCANSettings,
    KMeansSettings,
    LeidenSettings,
    ReductionSettings,
)
from histocluster.clustering.summary import pick_representatives
from histocluster.features.cell_pixels import OUTLINE, TileCells, crop_cells
from histocluster.features.morphology import morphology_embedding
from histocluster.features.settings import CellFeatureSettings, MorphologySettings
from histocluster.features.texture import pixel_features
from histocluster.labelling.cluster_labels import vote
from histocluster.labelling.propagation import propagate
from histocluster.labelling.settings import ClassificationParams, VLMSettings
from histocluster.labelling.vlm_client import AnswerCache, VLMClassifier
from histocluster.segmentation.evaluation import labels_at_points
from histocluster.segmentation.measurements import measure_objects
from histocluster.segmentation.settings import WatershedSettings
from histocluster.segmentation.watershed import segment_nuclei


def _tile(image_id: str, shape: tuple[int, int], mpp: float) -> dict:
    h, w = shape
    return {
        "slide_id": image_id,
        "tile_id": image_id,
        "x": 0,
        "y": 0,
        "w": w,
        "h": h,
        "out_w": w,
        "out_h": h,
        "out_mpp_x": mpp,
        "out_mpp_y": mpp,
    }


def image_and_labels(
    bench: Path, image_id: str, mpp: float, points_only: bool, foreground: str = "threshold"
) -> tuple[np.ndarray, np.ndarray]:
    """An image and its instance map: the true one, or the watershed's (with the given
    foreground, ``network`` or ``threshold``) for points-only sets."""
    rgb = np.asarray(Image.open(next((bench / "images").glob(f"{image_id}.*"))).convert("RGB"))
    if points_only:
        return rgb, segment_nuclei(rgb, mpp, WatershedSettings(foreground=foreground)).astype(np.int32)
    return rgb, np.asarray(Image.open(bench / "instances" / f"{image_id}.png")).astype(np.int32)


def load_cells(
    bench: Path, ring_um: float, foreground: str = "threshold"
) -> tuple[pd.DataFrame, float, float]:
    """Measured cells of every bench image with their true type (NaN where unknown),
    µm/px, and the share of ground-truth cells that were found (1 with true masks)."""
    info = json.loads((bench / "info.json").read_text())
    mpp = float(info["mpp"])
    truth = pd.read_csv(bench / "cells.csv")
    points_only = bool(info.get("points_only"))
    frames, found, total = [], 0, 0
    for image_id, types in truth.groupby("image_id"):
        rgb, labels = image_and_labels(bench, image_id, mpp, points_only, foreground)
        cells = measure_objects(labels, rgb, _tile(image_id, labels.shape, mpp), "bench")
        if cells.empty:
            total += len(types)
            continue
        cells = cells.merge(pixel_features(labels, rgb, mpp, ring_um), on="label")
        if points_only:
            under = labels_at_points(labels, types[["x", "y"]].to_numpy())
            hit = pd.DataFrame({"label": under, "cell_type": types["cell_type"].to_numpy()})
            hit = hit[hit["label"] > 0].drop_duplicates("label")  # one point per cell
            cells = cells.merge(hit, on="label", how="left")
            found += len(hit)
        else:
            cells = cells.merge(
                types.rename(columns={"instance_id": "label"})[["label", "cell_type"]],
                on="label",
                how="inner",
            )
            found += len(cells)
        total += len(types)
        frames.append(cells.assign(image_id=image_id))
    return pd.concat(frames, ignore_index=True), mpp, found / max(total, 1)


def scores(y_true, y_pred) -> dict:
    """Accuracy, and macro-F1 over the true classes (a `review` or `unlabelled` answer is
    simply wrong, not a class of its own)."""
    classes = sorted(set(y_true))
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "macro_f1": f1_score(y_true, y_pred, average="macro", labels=classes, zero_division=0),
    }


def oracle_names(clusters: pd.DataFrame, y: np.ndarray, r: int) -> tuple[dict, pd.DataFrame]:
    """Cluster id → majority true type of its first ``r`` typed representatives."""
    typed = clusters[pd.notna(y)]
    reps = pick_representatives(typed, r)
    index = pd.Series(np.arange(len(clusters)), index=clusters["cell_id"])
    reps["type"] = y[index.loc[reps["cell_id"]].to_numpy()]
    names = reps.groupby("cluster_id")["type"].agg(lambda t: t.mode().iloc[0]).to_dict()
    return names, reps


def clustered(x, cells, settings):
    """The clustering result and its table in the pipeline's ``clusters`` shape (each
    bench image stands for a slide and a tile)."""
    result = cluster_cells(x, cells["image_id"].to_numpy(), settings)
    clusters = pd.DataFrame(
        {
            "cell_id": cells["cell_id"],
            "slide_id": cells["image_id"],
            "tile_id": cells["image_id"],
            "cluster_id": result.labels,
            "is_noise": result.is_noise,
            "confidence": result.confidence,
        }
    )
    return result, clusters


def cluster_then(x, y, cells, settings, r, propagate):
    result, clusters = clustered(x, cells, settings)
    names, reps = oracle_names(clusters, y, r)
    decisions = len(names)
    if propagate == "lr" and len(set(names.values())) > 1:
        index = pd.Series(np.arange(len(cells)), index=cells["cell_id"])
        rows = index.loc[reps["cell_id"]].to_numpy()
        named = reps["cluster_id"].map(names).to_numpy()
        return LogisticRegression(max_iter=2000).fit(x[rows], named).predict(x), decisions
    fallback = pd.Series(list(names.values())).mode().iloc[0] if names else "none"
    pred = np.array([names.get(c, fallback) for c in result.labels], dtype=object)
    pred[result.labels == NOISE] = fallback  # noise: the most common name (a person would not see it)
    return pred, decisions


def representative_crops(
    bench: Path, cells: pd.DataFrame, chosen: pd.DataFrame, mpp: float, foreground: str = "threshold"
) -> dict[str, np.ndarray]:
    """Crops (as the pipeline makes them: clustering.representatives.crop_um, sent at
    classification.image_size px, outlined) of the chosen cells, by cell_id."""
    info = json.loads((bench / "info.json").read_text())
    settings = ClassificationParams()
    crop_px = max(2, round(ClusteringParams().representatives.crop_um / mpp))
    margin = crop_px // 2 + 1
    wanted = cells[cells["cell_id"].isin(chosen["cell_id"])]
    out = {}
    for image_id, group in wanted.groupby("image_id"):
        rgb, labels = image_and_labels(bench, image_id, mpp, bool(info.get("points_only")), foreground)
        own = np.zeros_like(labels)
        for k, label in enumerate(group["label"]):
            own[labels == label] = k + 1
        padded = np.pad(rgb, ((margin, margin), (margin, margin), (0, 0)), constant_values=255)
        item = TileCells(
            {"tile_id": image_id},
            padded,
            np.pad(own, margin),
            np.arange(len(group)),
            group[["centroid_x", "centroid_y"]].to_numpy() + margin,
        )
        crops = crop_cells(item, crop_px, settings.image_size, outline=OUTLINE)
        out.update(zip(group["cell_id"], crops, strict=True))
    return out


def through_classification(
    bench, x, y, cells, settings, mpp, threshold, cache, foreground="threshold"
) -> tuple[np.ndarray, int]:
    """Clusters → representatives → crops → the real VLM client and a loopback server whose
    "model" answers each crop with its cell's true type (untyped cells: an answer outside the
    vocabulary) → majority vote with the agreement threshold → propagation to every cell."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from chat_server import ChatServer, completion  # the tests' loopback Chat Completions server

    result, clusters = clustered(x, cells, settings)
    reps = pick_representatives(clusters, ClassificationParams().representatives)
    crops = representative_crops(bench, cells, reps, mpp, foreground)
    truth = dict(zip(cells["cell_id"], y, strict=True))
    by_image = {hashlib.sha256(crop.tobytes()).hexdigest(): truth[cell_id] for cell_id, crop in crops.items()}
    vocabulary = sorted({str(t) for t in y if pd.notna(t)})

    def reply(request, n):
        url = request["messages"][0]["content"][1]["image_url"]["url"]
        sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
        answer = by_image.get(hashlib.sha256(sent.tobytes()).hexdigest())
        content = json.dumps({"label": answer if isinstance(answer, str) else "unknown"})
        return 200, completion(content), {}, 0.0

    reps = reps[reps["cell_id"].isin(crops)]
    with ChatServer(reply) as server:
        vlm = VLMSettings(
            base_url=server.base_url, model="oracle", max_requests=10**6, max_cost_usd=10**6, concurrency=8
        )
        answers = VLMClassifier(vlm, "oracle-key", "oracle", vocabulary, AnswerCache(cache)).ask(
            [crops[c] for c in reps["cell_id"]]
        )
    table = reps[["cluster_id", "cell_id"]].assign(
        label=[a.label for a in answers], status=[a.status for a in answers], cost_usd=0.0
    )
    cluster_ids = sorted(int(c) for c in np.unique(result.labels) if c != NOISE)
    labels = vote(table, cluster_ids, threshold, "oracle")
    noise_nearest = None
    if result.is_noise.any():
        labelled = labels.loc[labels["status"] == "labelled", "cluster_id"].to_numpy()
        keep = np.isin(result.model.cluster_ids, labelled)
        if keep.any():
            noise_nearest = result.model.cluster_ids[keep][
                nearest_centre(x[result.is_noise], result.model.centres[keep])
            ]
    cell_labels = propagate(clusters, labels, "nearest", noise_nearest)
    return cell_labels["label"].to_numpy(dtype=object), len(cluster_ids)


def random_then(model, x, y, k, seed):
    typed = np.flatnonzero(pd.notna(y))
    chosen = np.random.default_rng(seed).choice(typed, size=min(k, len(typed)), replace=False)
    if len(set(y[chosen])) < 2:
        return np.full(len(y), y[chosen][0], dtype=object)
    return model().fit(x[chosen], y[chosen]).predict(x)


def leiden_for(x, cells, budget, seed):
    """Leiden resolution whose cluster count is nearest ``budget`` (bisection on log scale)."""
    lo, hi, best = 0.01, 100.0, None
    for _ in range(12):
        mid = float(np.sqrt(lo * hi))
        s = ClusterSettings(method="leiden", leiden=LeidenSettings(resolution=mid), random_state=seed)
        k = len(np.unique(cluster_cells(x, cells["image_id"].to_numpy(), s).labels))
        if best is None or abs(k - budget) < abs(best[1] - budget):
            best = (mid, k)
        if k == budget:
            break
        lo, hi = (mid, hi) if k < budget else (lo, mid)
    return ClusterSettings(method="leiden", leiden=LeidenSettings(resolution=best[0]), random_state=seed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path)
    parser.add_argument("--budgets", default="100,180,400", help="decisions (comma separated)")
    parser.add_argument("--representatives", type=int, default=9)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--context", type=int, default=8, help="neighbourhood context k (0 = none)")
    parser.add_argument("--no-texture", action="store_true", help="cell-table measurements only")
    parser.add_argument("--reductions", default="none,pca,umap")
    parser.add_argument("--methods", default="kmeans,leiden,hdbscan,dbscan")
    parser.add_argument(
        "--foreground",
        choices=("network", "threshold"),
        default="threshold",
        help="watershed foreground for points-only sets (CRC); the segmenter's default is threshold",
    )
    parser.add_argument(
        "--through-classification",
        action="store_true",
        help="also KMeans → the classification code (VLM client, oracle server, vote, propagation)",
    )
    args = parser.parse_args()

    t0 = time.perf_counter()
    # CoNSeP/CRC images are crops of a few slides from one scanner: standardise over all cells
    # (per-image z-scores of 256-px crops would erase real differences between them).
    settings = MorphologySettings(texture=not args.no_texture, context_neighbours=args.context)
    cells, mpp, detected = load_cells(args.bench, CellFeatureSettings().ring_um, args.foreground)
    x, columns = morphology_embedding(cells, np.full(len(cells), mpp), settings, within="all")
    y = cells["cell_type"].to_numpy().astype(object)
    typed = pd.notna(y)
    n = int(typed.sum())
    print(
        f"{args.bench.name}: {len(cells)} cells in {cells['image_id'].nunique()} images, {n} typed "
        f"({detected:.1%} of ground-truth cells found); {len(columns)} features; "
        + ", ".join(f"{c} {v}" for c, v in cells["cell_type"].value_counts().items())
        + f"  [{time.perf_counter() - t0:.0f} s]"
    )
    budgets = [int(b) for b in args.budgets.split(",")]
    near = min(budgets, key=lambda b: abs(b - n / 100))
    labels = sorted(set(y[typed]))
    recall_at: dict[str, dict] = {}

    def report(name: str, decisions: float, runs: list[np.ndarray], note: str = "") -> None:
        mean = {m: np.mean([scores(y[typed], p[typed])[m] for p in runs]) for m in ("accuracy", "macro_f1")}
        print(
            f"{decisions:9.0f} {decisions / n:9.4f}  {name:34s} {mean['accuracy']:9.3f} {mean['macro_f1']:9.3f}  {note}",
            flush=True,
        )
        recall_at[f"{name} @{decisions:.0f}"] = dict(
            zip(labels, recall_score(y[typed], runs[0][typed], labels=labels, average=None), strict=True)
        )

    print(f"\n{'decisions':>9} {'per cell':>9}  {'method':34s} {'accuracy':>9} {'macro-F1':>9}")
    for k in budgets:
        for name, model in (
            ("random + 5-NN", lambda: KNeighborsClassifier(5)),
            ("random + LR", lambda: LogisticRegression(max_iter=2000)),
        ):
            report(name, k, [random_then(model, x, y, k, s) for s in range(args.seeds)])
    methods = args.methods.split(",")
    for reduction in args.reductions.split(","):
        t = time.perf_counter()
        z = (
            x
            if reduction == "none"
            else fit_reduce(
                x, ReductionSettings(method=reduction, n_components=50 if reduction == "umap" else 30)
            )[1]
        )
        tag = f"[{reduction}]"
        print(f"-- reduction {reduction}: {z.shape[1]} dims ({time.perf_counter() - t:.0f} s)")
        for k in budgets:
            if "kmeans" in methods:
                for propagate in ("majority", "lr"):
                    s = [
                        ClusterSettings(kmeans=KMeansSettings(n_clusters=k), random_state=seed)
                        for seed in range(args.seeds)
                    ]
                    runs = [cluster_then(z, y, cells, si, args.representatives, propagate)[0] for si in s]
                    report(f"kmeans {propagate} {tag}", k, runs)
            if "leiden" in methods:
                s = leiden_for(z, cells, k, 0)
                pred, decisions = cluster_then(z, y, cells, s, args.representatives, "lr")
                report(f"leiden lr {tag}", decisions, [pred], f"resolution {s.leiden.resolution:.3g}")
        if args.through_classification:
            threshold = ClassificationParams().agreement_threshold
            with tempfile.TemporaryDirectory() as cache:
                for k in budgets:
                    s = ClusterSettings(kmeans=KMeansSettings(n_clusters=k))
                    pred, decisions = through_classification(
                        args.bench, z, y, cells, s, mpp, threshold, cache, args.foreground
                    )
                    review = float(np.mean(pred[typed] == "review"))
                    report(
                        f"kmeans → classification {tag}",
                        decisions,
                        [pred],
                        f"{review:.1%} of cells in review",
                    )
        if "hdbscan" in methods:
            pred, decisions = cluster_then(
                z, y, cells, ClusterSettings(method="hdbscan"), args.representatives, "majority"
            )
            report(f"hdbscan default {tag}", decisions, [pred])
        if "dbscan" in methods:
            s = ClusterSettings(method="dbscan", dbscan=DBSCANSettings())
            pred, decisions = cluster_then(z, y, cells, s, args.representatives, "majority")
            report(f"dbscan auto-eps {tag}", decisions, [pred])
    groups = cells["image_id"].to_numpy()[typed]
    for name, model in (
        ("supervised LR (ceiling)", LogisticRegression(max_iter=2000)),
        ("supervised GBDT (ceiling)", HistGradientBoostingClassifier()),
    ):
        pred = np.empty(len(y), dtype=object)
        pred[typed] = cross_val_predict(model, x[typed], y[typed], groups=groups, cv=GroupKFold(5))
        report(name, n, [pred], "all labels, CV by image")
    print(f"\nper-class recall at {near} decisions (~1 per 100 cells) and ceilings")
    print(f"  {'method':42s} " + " ".join(f"{c:>12s}" for c in labels))
    for name, recalls in recall_at.items():
        if name.endswith(f"@{near}") or "ceiling" in name:
            print(f"  {name:42s} " + " ".join(f"{recalls[c]:12.3f}" for c in labels))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
