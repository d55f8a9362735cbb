"""Quality and speed of the watershed nuclei segmenter on a bench set with instance maps.

Object precision/recall/F1 at IoU ≥ 0.5, AJI, PQ and mAP (IoU 0.5:0.95) per image, per
organ and averaged over images, and speed in Mpx/s on one thread (BLAS/OpenMP pinned to
one thread: a per-core figure; after one untimed warm-up call). The same code as
``kedro run --pipelines=evaluation``.

``--resolution 0.5`` resamples each image to 0.5 µm/px before segmenting and maps the
labels back, to check that the µm-based defaults hold at the pipeline's resolution.

A points-only set (``crc``: nucleus centres, no outlines) gives point recall per cell type
and the share of detected nuclei holding one point (1 − merge rate) instead.

Usage:
    python bench/bench_segmentation_quality.py ../shared/data/bench/monuseg [--resolution 0.5]
        [--settings '{"min_distance_um": 2.5}']
    python bench/bench_segmentation_quality.py ../shared/data/bench/crc
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from histocluster.segmentation.evaluation import (  # noqa: E402
    evaluate,
    evaluate_points,
    format_summary,
    resample,
)
from histocluster.segmentation.settings import WatershedSettings  # noqa: E402
from histocluster.segmentation.watershed import cached_network, segment_nuclei  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path)
    parser.add_argument("--resolution", type=float, default=None, help="segment at this µm/px")
    parser.add_argument("--settings", default="{}", help="WatershedSettings as JSON")
    args = parser.parse_args()
    settings = WatershedSettings(**json.loads(args.settings))
    if settings.foreground == "network":
        cached_network(
            settings.weights_path, settings.runtime, settings.precision
        )  # start-up (import, weights) is not per-pixel speed
    segment = partial(segment_nuclei, settings=settings)
    # Warm-up, untimed: the first call imports the watershed code and lets oneDNN build its
    # kernels for the image size — paid once per run, not per image or tile.
    mpp = float(json.loads((args.bench / "info.json").read_text())["mpp"])
    first = np.asarray(Image.open(sorted((args.bench / "images").iterdir())[0]).convert("RGB"))
    segment(*resample(first, mpp, args.resolution))
    if json.loads((args.bench / "info.json").read_text()).get("points_only"):
        result = evaluate_points(args.bench, segment)
        types = "  ".join(f"{name} {value:.3f}" for name, value in result["recall_per_type"].items())
        print(f"{result['images']} images, {result['points']} points at native resolution")
        print(f"point recall {result['recall']:.3f}  ({types})")
        print(f"detected nuclei holding one point {result['single']:.3f}")
        print(f"speed {result['megapixels_per_second']:.2f} Mpx/s")
        return
    scores, summary = evaluate(args.bench, segment, args.resolution)
    print(format_summary(scores, summary))


if __name__ == "__main__":
    main()
