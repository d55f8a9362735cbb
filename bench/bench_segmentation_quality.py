"""Quality and speed of the watershed nuclei segmenter on a bench set with instance maps.

For every image of ``<bench>/images`` with a label map in ``<bench>/instances``: object
precision/recall/F1 at IoU ≥ 0.5, AJI, PQ and mAP (IoU 0.5:0.95), per image, per organ
(MoNuSeg's TCGA tissue-source-site codes) and averaged over images; and segmentation
speed in Mpx/s on one thread (BLAS/OpenMP pinned to one thread: a per-core figure).

``--resolution 0.5`` downsamples each image to 0.5 µm/px before segmenting and maps
the labels back, to check that the µm-based defaults hold at the pipeline's resolution.

Usage:
    python bench/bench_segmentation_quality.py ../shared/data/bench/monuseg [--resolution 0.5]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from histocluster.segmentation_metrics import score  # noqa: E402
from histocluster.segmenters.watershed import WatershedSettings, segment_nuclei  # noqa: E402

# TCGA tissue source sites of the MoNuSeg training images.
ORGANS = {
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
METRICS = ("precision", "recall", "f1", "aji", "pq", "map")


def organ(image_id: str) -> str:
    parts = image_id.split("-")
    return ORGANS.get(parts[1], "other") if image_id.startswith("TCGA-") and len(parts) > 1 else "other"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path)
    parser.add_argument("--resolution", type=float, default=None, help="segment at this µm/px")
    parser.add_argument("--settings", default="{}", help="WatershedSettings as JSON")
    args = parser.parse_args()

    mpp = float(json.loads((args.bench / "info.json").read_text())["mpp"])
    settings = WatershedSettings(**json.loads(args.settings))
    rows, seconds, megapixels = [], 0.0, 0.0
    for image_path in sorted((args.bench / "images").iterdir()):
        truth_path = args.bench / "instances" / f"{image_path.stem}.png"
        if not truth_path.is_file():
            continue
        rgb = np.asarray(Image.open(image_path).convert("RGB"))
        truth = np.asarray(Image.open(truth_path))
        work_mpp, image = mpp, rgb
        if args.resolution:
            factor = mpp / args.resolution
            size = (round(rgb.shape[1] * factor), round(rgb.shape[0] * factor))
            image = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
            work_mpp = mpp * rgb.shape[1] / size[0]
        start = time.perf_counter()
        labels = segment_nuclei(image, work_mpp, settings)
        seconds += time.perf_counter() - start
        megapixels += image.shape[0] * image.shape[1] / 1e6
        if labels.shape != truth.shape:
            labels = np.asarray(Image.fromarray(labels).resize(truth.shape[::-1], Image.Resampling.NEAREST))
        s = score(truth, labels)
        rows.append({"image": image_path.stem, "organ": organ(image_path.stem), **s.as_dict()})

    header = f"{'image':32s} {'organ':9s} " + " ".join(f"{m:>9s}" for m in METRICS) + "   true  pred"
    print(header)
    for r in rows:
        print(
            f"{r['image']:32s} {r['organ']:9s} "
            + " ".join(f"{r[m]:9.3f}" for m in METRICS)
            + f" {r['n_true']:6d} {r['n_pred']:5d}"
        )
    print()
    for name in sorted({r["organ"] for r in rows}):
        group = [r for r in rows if r["organ"] == name]
        print(
            f"{'organ: ' + name:32s} {len(group):9d} "
            + " ".join(f"{np.mean([r[m] for r in group]):9.3f}" for m in METRICS)
        )
    print(
        f"{'mean over images':32s} {len(rows):9d} "
        + " ".join(f"{np.mean([r[m] for r in rows]):9.3f}" for m in METRICS)
    )
    print(
        f"\nresolution {args.resolution or mpp} µm/px; speed {megapixels / seconds:.2f} Mpx/s on one thread ({megapixels:.1f} Mpx in {seconds:.1f} s)"
    )


if __name__ == "__main__":
    main()
