"""Wall-clock speed-up of the segmentation pass from 1 to N worker processes.

Runs the tiling nodes once on a slide, then the segmentation node (``segment_tiles``: tile
reads, quality, segmentation, measurements, pixel features) with
``segmentation.parallel.n_workers`` = each of ``--workers`` (nothing stored, so every run
segments every tile), and prints wall seconds, cells per wall-second and the speed-up over
one worker. The worker processes' start-up (Dask LocalCluster, importing torch, loading the
network) is included: it is what a run pays.

Usage:
    python bench/make_big_slide.py --out /tmp/big8k.tif --size 8192
    python bench/bench_parallel.py /tmp/big8k.tif [--workers 1 2] [--max-tiles 64]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the workers are the parallelism
os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")

import pandas as pd  # noqa: E402

from histocluster.pipelines.segmentation.nodes import segment_tiles  # noqa: E402
from histocluster.pipelines.tiling.nodes import describe_slides, detect_tissue_masks, plan_tiles  # noqa: E402
from histocluster.segmentation.settings import SegmentationParams  # noqa: E402
from histocluster.wsi.settings import FilteringParams, TilingParams  # noqa: E402
from histocluster.wsi.slides import SlideSource, slugify  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("slide", type=Path)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-tiles", type=int, default=None, help="tiles segmented (default: all)")
    parser.add_argument("--tiles-per-task", type=int, default=None, help="default: the parameter's")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)

    tiling = TilingParams(max_tiles=args.max_tiles)
    filtering = FilteringParams()
    sources = [SlideSource(slugify(args.slide.stem), str(args.slide))]
    slides, thumbnails, regions = describe_slides(sources, tiling)
    masks = detect_tissue_masks(slides, thumbnails, tiling)
    tiles = plan_tiles(slides, masks, regions, tiling)
    print(f"{args.slide.name}: {len(tiles)} tiles at {tiling.target_mpp} µm/px")
    rows = []
    for workers in args.workers:
        params = SegmentationParams.model_validate({"slide_store": None, "parallel": {"n_workers": workers}})
        start = time.perf_counter()
        _, cells, *_ = segment_tiles(slides, tiles, tiling, filtering, params)
        wall = time.perf_counter() - start
        rows.append(
            {"workers": workers, "wall_s": wall, "cells": len(cells), "cells_per_s": len(cells) / wall}
        )
    table = pd.DataFrame(rows)
    table["speed_up"] = table["wall_s"].iloc[0] / table["wall_s"]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
