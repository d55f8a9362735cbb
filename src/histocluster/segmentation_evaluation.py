"""Score a segmenter on a bench set: images with ground-truth instance maps.

Bench layout (``../shared/data/README.md``)::

    <bench>/images/<id>.png|.jpg     RGB image
    <bench>/instances/<id>.png       uint16 instance label map, 0 = background
    <bench>/info.json                {"mpp": µm per pixel, ...}
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.errors import UserInputError
from histocluster.segmentation_metrics import score

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


def evaluate(bench: Path, segment: Segmenter, resolution: float | None = None) -> tuple[pd.DataFrame, dict]:
    """Per-image scores and a summary (mean over images, per organ, speed).

    ``resolution`` (µm/px) resamples each image before segmenting and maps the labels
    back with nearest-neighbour, to measure at the pipeline's resolution.
    """
    mpp, items = bench_items(bench)
    rows, seconds, megapixels = [], 0.0, 0.0
    for image_id, image_path, truth_path in items:
        rgb = np.asarray(Image.open(image_path).convert("RGB"))
        truth = np.asarray(Image.open(truth_path))
        work, work_mpp = rgb, mpp
        if resolution:
            size = (round(rgb.shape[1] * mpp / resolution), round(rgb.shape[0] * mpp / resolution))
            work = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
            work_mpp = mpp * rgb.shape[1] / size[0]
        start = time.perf_counter()
        labels = segment(work, work_mpp)
        seconds += time.perf_counter() - start
        megapixels += work.shape[0] * work.shape[1] / 1e6
        if labels.shape != truth.shape:
            labels = np.asarray(
                Image.fromarray(labels.astype(np.int32)).resize(truth.shape[::-1], Image.Resampling.NEAREST)
            )
        rows.append({"image_id": image_id, "organ": organ(image_id), **score(truth, labels).as_dict()})
    scores = pd.DataFrame(rows)
    summary = {
        "bench": str(bench),
        "images": len(scores),
        "resolution_mpp": resolution or mpp,
        "mean": {m: float(scores[m].mean()) for m in SUMMARY_METRICS},
        "per_organ": {
            name: {m: float(group[m].mean()) for m in SUMMARY_METRICS} | {"images": len(group)}
            for name, group in scores.groupby("organ")
        },
        "megapixels_per_second": megapixels / seconds if seconds else None,
    }
    return scores, summary


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
