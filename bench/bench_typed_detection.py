"""Typed detection on CoNSeP end to end, scored as HoVer-Net scores it (Graham et al. 2019).

Every image is segmented by the default segmenter at the pipeline's resolution (0.5 µm/px:
each 0.25 µm/px image resampled, the labels mapped back), the detected cells measured and
embedded (``morphology``), clustered with KMeans at a decision budget, each cluster named
once by an oracle from the true types of its representatives (a representative that matches
no true nucleus has no type and is skipped), and the names propagated to every detected
cell — by the cluster (what a run gives) and by the cell-type model trained on the names.

Scores, over all images pooled (HoVer-Net ``run_nuclei_type_stat``): detections are paired
with true nuclei by centroid within 12 px (3 µm at 40×), one to one (Hungarian);
F_d = 2 TP / (2 TP + FP + FN); per type t,
F_c^t = 2 (TP_c + TN_c) / (2 (TP_c + TN_c) + 2 FP_c + 2 FN_c + FP_d^t + FN_d^t), where the
_c terms count paired nuclei typed right or wrong with respect to t — only those that are t
or were typed t, as HoVer-Net's code does, so TN_c is 0 — and FP_d^t / FN_d^t the unpaired
detections typed t / unpaired true nuclei of type t.

Published supervised HoVer-Net on CoNSeP's *test* split: F_d 0.748, F_c epithelial 0.635,
inflammatory 0.631, spindle 0.566, miscellaneous 0.426. The bench set here is CoNSeP's
*training* split cut into 256² tiles (nuclei cut by tile borders count), so the figures
are a guide, not a like-for-like comparison.

Usage:
    python bench/bench_typed_detection.py ../shared/data/bench/consep [--per-cell 100,300]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_label_efficiency import _tile, clustered  # noqa: E402

from histocluster.clustering.settings import ClusterSettings, KMeansSettings  # noqa: E402
from histocluster.clustering.summary import pick_representatives  # noqa: E402
from histocluster.features.embeddings import Embeddings  # noqa: E402
from histocluster.features.morphology import morphology_embedding  # noqa: E402
from histocluster.features.settings import CellFeatureSettings, MorphologySettings  # noqa: E402
from histocluster.features.texture import pixel_features  # noqa: E402
from histocluster.labelling.cell_type_model import predict, train, training_cells  # noqa: E402
from histocluster.labelling.cluster_labels import CLUSTER_LABEL_COLUMNS  # noqa: E402
from histocluster.labelling.propagation import propagate  # noqa: E402
from histocluster.segmentation.evaluation import resample  # noqa: E402
from histocluster.segmentation.measurements import measure_objects  # noqa: E402
from histocluster.segmentation.settings import WatershedSettings  # noqa: E402
from histocluster.segmentation.watershed import segment_nuclei  # noqa: E402

RADIUS_PX = 12  # HoVer-Net at 40× (rad = 6 at 20×)


def pair(true_xy: np.ndarray, pred_xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs (true index, predicted index) of centroids closer than ``radius``,
    the assignment that minimises the total distance (as HoVer-Net's ``pair_coordinates``)."""
    if not len(true_xy) or not len(pred_xy):
        return np.zeros(0, int), np.zeros(0, int)
    distance = np.linalg.norm(true_xy[:, None, :] - pred_xy[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(distance)
    keep = distance[rows, cols] <= radius
    return rows[keep], cols[keep]


def detect(
    bench: Path, resolution: float, settings: WatershedSettings | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detected cells of every image (measured, with the type of the true nucleus each is
    paired with, NaN when unpaired) and the true nuclei with the detection they are paired
    with (-1 when missed)."""
    info = json.loads((bench / "info.json").read_text())
    mpp = float(info["mpp"])
    truth = pd.read_csv(bench / "cells.csv")
    settings = settings or WatershedSettings()
    ring_um = CellFeatureSettings().ring_um
    frames, truths = [], []
    for image_id, types in truth.groupby("image_id", sort=True):
        rgb = np.asarray(Image.open(next((bench / "images").glob(f"{image_id}.*"))).convert("RGB"))
        work, work_mpp = resample(rgb, mpp, resolution)
        labels = segment_nuclei(work, work_mpp, settings).astype(np.int32)
        if labels.shape != rgb.shape[:2]:
            labels = np.asarray(Image.fromarray(labels).resize(rgb.shape[1::-1], Image.Resampling.NEAREST))
        cells = measure_objects(labels, rgb, _tile(image_id, labels.shape, mpp), "bench")
        true_xy = types[["x", "y"]].to_numpy(float)
        matched = np.full(len(types), -1)
        if len(cells):
            cells = cells.merge(pixel_features(labels, rgb, mpp, ring_um), on="label")
            rows, cols = pair(true_xy, cells[["centroid_x", "centroid_y"]].to_numpy(float), RADIUS_PX)
            cells["cell_type"] = pd.Series([None] * len(cells), dtype=object)
            cells.loc[cells.index[cols], "cell_type"] = types["cell_type"].to_numpy()[rows]
            matched[rows] = cols
            frames.append(cells.assign(image_id=image_id))
        truths.append(types.assign(paired=matched))
    return pd.concat(frames, ignore_index=True), pd.concat(truths, ignore_index=True)


def typed_detection_scores(cells: pd.DataFrame, truth: pd.DataFrame, predicted: np.ndarray) -> dict:
    """F_d and F_c per type (HoVer-Net's formula, see the module doc) of ``predicted`` types
    of the detected cells."""
    paired = pd.notna(cells["cell_type"]).to_numpy()
    tp_d, fp_d, fn_d = int(paired.sum()), int((~paired).sum()), int((truth["paired"] < 0).sum())
    out = {"F_d": 2 * tp_d / (2 * tp_d + fp_d + fn_d)}
    true_paired = cells["cell_type"].to_numpy(dtype=object)[paired]
    pred_paired = predicted[paired]
    pred_unpaired = predicted[~paired]
    missed = truth.loc[truth["paired"] < 0, "cell_type"].to_numpy(dtype=object)
    for t in sorted(truth["cell_type"].unique()):
        # HoVer-Net counts only the paired nuclei that are t or typed t: TN_c is 0.
        tp = int(((true_paired == t) & (pred_paired == t)).sum())
        tn = 0
        fp = int(((true_paired != t) & (pred_paired == t)).sum())
        fn = int(((true_paired == t) & (pred_paired != t)).sum())
        fp_dt, fn_dt = int((pred_unpaired == t).sum()), int((missed == t).sum())
        out[f"F_c {t}"] = 2 * (tp + tn) / (2 * (tp + tn) + 2 * fp + 2 * fn + fp_dt + fn_dt)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path)
    parser.add_argument("--per-cell", default="100,300", help="detected cells per decision (comma separated)")
    parser.add_argument(
        "--resolution", type=float, default=0.5, help="segment at this µm/px (the pipeline's)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", type=Path, help="a folder to keep the detections in")
    parser.add_argument(
        "--settings", default="{}", help='WatershedSettings as JSON, e.g. \'{"weights_path": "other.onnx"}\''
    )
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.cache and (args.cache / "cells.parquet").is_file():
        cells, truth = (
            pd.read_parquet(args.cache / "cells.parquet"),
            pd.read_parquet(args.cache / "truth.parquet"),
        )
    else:
        cells, truth = detect(args.bench, args.resolution, WatershedSettings(**json.loads(args.settings)))
        if args.cache:
            args.cache.mkdir(parents=True, exist_ok=True)
            cells.to_parquet(args.cache / "cells.parquet")
            truth.to_parquet(args.cache / "truth.parquet")
    mpp = float(json.loads((args.bench / "info.json").read_text())["mpp"])
    print(
        f"{args.bench.name}: {len(truth)} true nuclei in {truth['image_id'].nunique()} images; "
        f"{len(cells)} detected at {args.resolution} µm/px, {int(pd.notna(cells['cell_type']).sum())} paired "
        f"within {RADIUS_PX} px  [{time.perf_counter() - t0:.0f} s]"
    )
    x, _ = morphology_embedding(cells, np.full(len(cells), mpp), MorphologySettings(), within="all")
    y = cells["cell_type"].to_numpy(dtype=object)
    classes = sorted(truth["cell_type"].unique())
    print(
        f"\n{'cells/decision':>14} {'decisions':>9}  {'typing':22s} {'F_d':>6} "
        + " ".join(f"{'F_c ' + c:>16s}" for c in classes)
    )
    perfect = typed_detection_scores(cells, truth, np.where(pd.notna(y), y, "none"))
    for per_cell in (int(p) for p in args.per_cell.split(",")):
        runs: dict[str, list[dict]] = {"cluster name": [], "cell-type model": []}
        decisions = []
        for seed in range(args.seeds):
            settings = ClusterSettings(
                kmeans=KMeansSettings(n_clusters=max(2, round(len(cells) / per_cell))), random_state=seed
            )
            _, clusters = clustered(x, cells, settings)
            reps = pick_representatives(clusters[pd.notna(y)], 9)
            index = pd.Series(np.arange(len(cells)), index=cells["cell_id"])
            reps["type"] = y[index.loc[reps["cell_id"]].to_numpy()]
            names = reps.groupby("cluster_id")["type"].agg(lambda t: t.mode().iloc[0]).to_dict()
            decisions.append(len(names))
            table = pd.DataFrame(
                [(c, n, "labelled", "human", "{}", 1.0, 0, None, None, None) for c, n in names.items()],
                columns=CLUSTER_LABEL_COLUMNS,
            )
            cell_labels = propagate(clusters, table, "unlabelled")
            fallback = pd.Series(list(names.values())).mode().iloc[0]
            by_cluster = cell_labels["label"].replace({"unlabelled": fallback}).to_numpy(dtype=object)
            runs["cluster name"].append(typed_detection_scores(cells, truth, by_cluster))
            model = train(
                Embeddings(cells["cell_id"].to_numpy(), x),
                training_cells(cell_labels, reps),
                random_state=seed,
            )
            by_model = predict(model, Embeddings(cells["cell_id"].to_numpy(), x), 0.0)["label"].to_numpy(
                dtype=object
            )
            runs["cell-type model"].append(typed_detection_scores(cells, truth, by_model))
        for name, scores in runs.items():
            mean = {k: np.mean([s[k] for s in scores]) for k in scores[0]}
            print(
                f"{per_cell:14d} {np.mean(decisions):9.0f}  {name:22s} {mean['F_d']:6.3f} "
                + " ".join(f"{mean['F_c ' + c]:16.3f}" for c in classes)
            )
    print(
        f"{'(every paired cell typed right: the ceiling of this detection)':>47} {perfect['F_d']:6.3f} "
        + " ".join(f"{perfect['F_c ' + c]:16.3f}" for c in classes)
    )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
