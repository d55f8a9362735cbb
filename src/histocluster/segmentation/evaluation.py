"""Score a segmenter on a bench set: images with ground-truth instance maps.

Bench layout (``../shared/data/README.md``)::

    <bench>/images/<id>.png|.jpg     RGB image
    <bench>/instances/<id>.png       uint16 instance label map, 0 = background
    <bench>/info.json                {"mpp": µm per pixel, ...}
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.errors import UserInputError
from histocluster.segmentation.metrics import score

#: TCGA tissue source sites of the MoNuSeg images → organ.
TCGA_ORGANS = {
    "21": "lung",
    "50": "lung",
    "A7": "breast",
    "AR": "breast",
    "E2": "breast",
    "B0": "kidney",
    "CH": "prostate",
    "G9": "prostate",
    "NH": "colon",
}
SUMMARY_METRICS = ("precision", "recall", "f1", "aji", "pq", "map")

Segmenter = Callable[[np.ndarray, float], np.ndarray]


def organ(image_id: str) -> str:
    """Organ of a TCGA image id (``TCGA-21-5784-…`` → lung); 'other' when unknown."""
    parts = image_id.split("-")
    return TCGA_ORGANS.get(parts[1], "other") if image_id.startswith("TCGA-") and len(parts) > 1 else "other"


def bench_items(bench: Path) -> tuple[float, list[tuple[str, Path, Path]]]:
    """µm/px of the set and its (id, image, instances) triples."""
    bench = Path(bench)
    info = bench / "info.json"
    if not info.is_file():
        raise UserInputError(f"{bench}: not a bench set (no info.json); see evaluation.bench_dir")
    mpp = float(json.loads(info.read_text())["mpp"])
    items = []
    for image in sorted((bench / "images").iterdir()):
        truth = bench / "instances" / f"{image.stem}.png"
        if truth.is_file():
            items.append((image.stem, image, truth))
    if not items:
        raise UserInputError(f"{bench}: no image has an instance map in {bench / 'instances'}")
    return mpp, items


def resample(rgb: np.ndarray, mpp: float, resolution: float | None) -> tuple[np.ndarray, float]:
    """``rgb`` (at ``mpp`` µm/px) resampled (Lanczos) to about ``resolution`` µm/px, and its
    exact µm/px after rounding to whole pixels; unchanged when ``resolution`` is None."""
    if not resolution:
        return rgb, mpp
    size = (round(rgb.shape[1] * mpp / resolution), round(rgb.shape[0] * mpp / resolution))
    work = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
    return work, mpp * rgb.shape[1] / size[0]


def evaluate(
    bench: Path,
    segment: Segmenter,
    resolution: float | None = None,
    image_ids: Collection[str] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Per-image scores and their :func:`summarise` summary.

    ``resolution`` (µm/px) resamples each image before segmenting and maps the labels
    back with nearest-neighbour, to measure at the pipeline's resolution. ``image_ids``
    limits the run to those images (e.g. one held-out fold).
    """
    mpp, items = bench_items(bench)
    if image_ids is not None:
        missing = set(image_ids) - {image_id for image_id, _, _ in items}
        if missing:
            raise UserInputError(f"{bench}: no image with instances for {sorted(missing)}")
        wanted = set(image_ids)
        items = [item for item in items if item[0] in wanted]
    rows = []
    for image_id, image_path, truth_path in items:
        rgb = np.asarray(Image.open(image_path).convert("RGB"))
        truth = np.asarray(Image.open(truth_path))
        work, work_mpp = resample(rgb, mpp, resolution)
        start = time.perf_counter()
        labels = segment(work, work_mpp)
        seconds = time.perf_counter() - start
        if labels.shape != truth.shape:
            labels = np.asarray(
                Image.fromarray(labels.astype(np.int32)).resize(truth.shape[::-1], Image.Resampling.NEAREST)
            )
        rows.append(
            {"image_id": image_id, "organ": organ(image_id), **score(truth, labels).as_dict()}
            | {"megapixels": work.shape[0] * work.shape[1] / 1e6, "seconds": seconds}
        )
    scores = pd.DataFrame(rows)
    return scores, summarise(scores, bench, resolution or mpp)


def summarise(scores: pd.DataFrame, bench: Path, resolution: float) -> dict:
    """Mean of each metric over images, per organ and overall, and the speed in Mpx/s.

    ``scores`` are rows of :func:`evaluate` (also several runs' rows concatenated).
    """
    seconds = float(scores["seconds"].sum())
    return {
        "bench": str(bench),
        "images": len(scores),
        "resolution_mpp": resolution,
        "mean": {m: float(scores[m].mean()) for m in SUMMARY_METRICS},
        "per_organ": {
            name: {m: float(group[m].mean()) for m in SUMMARY_METRICS} | {"images": len(group)}
            for name, group in scores.groupby("organ")
        },
        "megapixels_per_second": float(scores["megapixels"].sum()) / seconds if seconds else None,
    }


def labels_at_points(labels: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    """The label under each point (pixel x, y; rounded, clipped to the image), 0 = background."""
    xy = np.rint(np.asarray(points_xy, dtype=float).reshape(-1, 2)).astype(int)
    x = np.clip(xy[:, 0], 0, labels.shape[1] - 1)
    y = np.clip(xy[:, 1], 0, labels.shape[0] - 1)
    return labels[y, x]


def point_scores(labels: np.ndarray, points_xy: np.ndarray) -> dict:
    """Counts of how a label map covers nucleus centre points (pixel x, y), for sets without
    outlines: ``points``; ``hit``, the points inside a labelled nucleus; ``nuclei_hit``, the
    nuclei holding a point; ``single``, those holding exactly one. Recall is hit / points and
    the single share single / nuclei_hit (1 − merge rate). Precision needs every nucleus
    marked, which point sets such as CRCHistoPhenotypes do not promise, so it is not given.
    """
    return _point_counts(labels_at_points(labels, points_xy))


def _point_counts(under: np.ndarray) -> dict:
    """:func:`point_scores` from the labels under the points."""
    _, counts = np.unique(under[under > 0], return_counts=True)
    return {
        "points": len(under),
        "hit": int((under > 0).sum()),
        "nuclei_hit": len(counts),
        "single": int((counts == 1).sum()),
    }


def evaluate_points(bench: Path, segment: Segmenter) -> dict:
    """Point recall (overall and per cell type) and single-point share on a points-only
    bench set (``cells.csv`` with image_id, x, y, cell_type), with the speed in Mpx/s."""
    bench = Path(bench)
    info = bench / "info.json"
    table = bench / "cells.csv"
    if not info.is_file() or not table.is_file():
        raise UserInputError(f"{bench}: not a points bench set (needs info.json and cells.csv)")
    mpp = float(json.loads(info.read_text())["mpp"])
    cells = pd.read_csv(table)
    images = {path.stem: path for path in (bench / "images").iterdir()}
    totals = {"points": 0, "hit": 0, "nuclei_hit": 0, "single": 0}
    found = []
    seconds = megapixels = 0.0
    for image_id, points in cells.groupby("image_id"):
        if image_id not in images:
            raise UserInputError(f"{table}: image {image_id!r} is not in {bench / 'images'}")
        rgb = np.asarray(Image.open(images[image_id]).convert("RGB"))
        start = time.perf_counter()
        labels = segment(rgb, mpp)
        seconds += time.perf_counter() - start
        megapixels += rgb.shape[0] * rgb.shape[1] / 1e6
        under = labels_at_points(labels, points[["x", "y"]].to_numpy())
        for key, value in _point_counts(under).items():
            totals[key] += value
        found.append(pd.DataFrame({"cell_type": points["cell_type"].to_numpy(), "hit": under > 0}))
    per_type = pd.concat(found).groupby("cell_type")["hit"].mean()
    return {
        "bench": str(bench),
        "images": int(cells["image_id"].nunique()),
        "points": totals["points"],
        "recall": totals["hit"] / max(totals["points"], 1),
        "single": totals["single"] / max(totals["nuclei_hit"], 1),
        "recall_per_type": {str(name): float(value) for name, value in sorted(per_type.items())},
        "megapixels_per_second": megapixels / seconds if seconds else None,
    }


def format_summary(scores: pd.DataFrame, summary: dict) -> str:
    """A plain-text table of the per-image, per-organ and mean scores."""
    head = f"{'image':32s} {'organ':9s} " + " ".join(f"{m:>9s}" for m in SUMMARY_METRICS) + "   true  pred"
    lines = [head]
    for r in scores.to_dict("records"):
        lines.append(
            f"{r['image_id']:32s} {r['organ']:9s} "
            + " ".join(f"{r[m]:9.3f}" for m in SUMMARY_METRICS)
            + f" {r['n_true']:6d} {r['n_pred']:5d}"
        )
    lines.append("")
    for name, values in sorted(summary["per_organ"].items()):
        lines.append(
            f"{'organ: ' + name:32s} {values['images']:9d} "
            + " ".join(f"{values[m]:9.3f}" for m in SUMMARY_METRICS)
        )
    lines.append(
        f"{'mean over images':32s} {summary['images']:9d} "
        + " ".join(f"{summary['mean'][m]:9.3f}" for m in SUMMARY_METRICS)
    )
    speed = summary["megapixels_per_second"]
    lines.append(f"\nresolution {summary['resolution_mpp']:g} µm/px; speed {speed:.2f} Mpx/s")
    return "\n".join(lines)
